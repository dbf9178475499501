"""Trading signals: external predictions read tolerantly and their labels normalized."""
