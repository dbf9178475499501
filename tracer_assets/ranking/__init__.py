"""The ranking domain: everything is ranked, the best kept, the rest archived with a reason."""
