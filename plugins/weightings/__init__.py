"""First-party task weightings."""
