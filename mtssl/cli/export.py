"""``mtssl export``: a trained run as TorchScript/ONNX files plus ``metadata.json``."""
from __future__ import annotations

import click

from mtssl.cli.common import checkpoint_option, err_console, friendly_errors
from mtssl.console.output import load_host, plain
from mtssl.export import TOLERANCE


@click.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@checkpoint_option
@click.option("--format", "fmt", type=click.Choice(["torchscript", "onnx", "both"]), default="both",
              show_default=True, help="Which files to write (ONNX needs: pip install 'mtssl[export]').")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the files.")
@click.option("--tolerance", type=click.FloatRange(min=0, min_open=True), default=TOLERANCE, show_default=True,
              help="Largest absolute difference from mtssl predict allowed on the check images "
                   "(outputs lie in [0, 1]; an ONNX file's bridge maps may differ by up to 0.1, as onnxruntime "
                   "breaks max-pool near-ties its own way); a larger one fails the export and writes nothing.")
@friendly_errors
def export_command(run_dir, checkpoint, fmt, out_dir, tolerance):
    """Write the model as TorchScript/ONNX for inference.

    The saliency bridge is computed inside the graph; metadata.json says how to feed it.
    The files are checked against mtssl predict before they replace anything in --out.
    """
    from mtssl.export.write import export_run
    from mtssl.evaluation.inference import load_model

    host = load_host(err_console())
    loaded = load_model(run_dir, checkpoint, host, device="cpu")
    target = export_run(loaded, out_dir, fmt, host, checkpoint, tolerance)
    err_console().print(plain(f"Exported {loaded.path} (step {loaded.step}) as {fmt} into {out_dir}"), soft_wrap=True)
    click.echo(str(target))
