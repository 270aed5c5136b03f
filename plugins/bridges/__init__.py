"""First-party bridges."""
