"""A trained run as TorchScript/ONNX files with the metadata a deployment needs, and their use by ``predict``."""

TOLERANCE = 1e-3
"""Default largest absolute difference between an exported file and ``predict`` (probabilities and maps in [0, 1]);
here, free of torch, so the CLI can show it without importing the exporter."""
