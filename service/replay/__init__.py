"""Batch replay of exported device data: `python -m service replay PATH...`.

Public API: `add_arguments(parser)` and `run(args) -> exit status`, registered by the service CLI as
`replay`. Files become uploads for the same pipeline the HTTP endpoints use (see `runner`).
"""

from service.replay.cli import add_arguments, run

__all__ = ["add_arguments", "run"]
