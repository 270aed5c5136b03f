"""The ``mtssl`` command line: one module per command group, shared helpers in :mod:`.common`.

The entry point is :func:`mtssl.cli.app.main`; a command's module is imported
only when that command runs (or shows its help), so ``mtssl --help`` imports
neither torch nor numpy.
"""
