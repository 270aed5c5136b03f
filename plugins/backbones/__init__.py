"""First-party backbones."""
