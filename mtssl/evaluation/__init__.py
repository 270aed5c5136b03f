"""Using a trained run: scores on validation and test sets, predictions for files, the visual report."""
