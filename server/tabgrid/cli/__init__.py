"""``tabgrid``: serve, worker, submit, jobs, results, token and demo."""

from tabgrid.cli.commands import main

__all__ = ["main"]
