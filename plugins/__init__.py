"""First-party mtssl plugins, installed as ``mtssl_plugins`` and loaded through entry points."""
