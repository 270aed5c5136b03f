"""Pure evaluation metrics on numpy arrays, shared by the task plugins."""
