"""The ml domain: LightGBM classifiers predicting the five labels, their validation and metrics."""
