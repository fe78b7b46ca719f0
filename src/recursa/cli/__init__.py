"""The `recursa` command (console script `recursa.cli:main`): the click group and its
commands in `main`, the shared options in `options`, printing and exit codes in `output`."""

from .main import cli, dispatch, main

__all__ = ["cli", "dispatch", "main"]
