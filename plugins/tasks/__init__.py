"""First-party tasks."""
