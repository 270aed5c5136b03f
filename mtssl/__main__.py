"""``python -m mtssl``: the same command line as ``mtssl``."""
from mtssl.cli.app import main

main(prog_name="mtssl")
