"""mtssl: plugin-based multi-task semi-supervised learning for medical images.

Plugins import from :mod:`mtssl.api` only. The core is grouped by what it
does: ``cli`` (the commands), ``run`` (settings, run directory, checkpoint
files), ``data`` (sources to batches), ``model`` (the multi-task network),
``training`` (the loop), ``evaluation`` (scores, predictions, reports),
``export`` (TorchScript/ONNX) and ``bench`` (ablation grids). Importing this
package imports nothing else.
"""
