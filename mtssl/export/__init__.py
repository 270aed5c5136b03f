"""A trained run as TorchScript/ONNX files with the metadata a deployment needs, and their use by ``predict``."""
