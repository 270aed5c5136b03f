"""First-party strategies."""
