"""Lint D1 (SQLite) migrations for statements that wipe child tables through ON DELETE CASCADE.

Public API: `add_arguments(parser)` and `run(args) -> exit code`, registered by the service CLI as
`lint-migrations`. See README.md in this package for the rules.
"""

from .cli import add_arguments, run

__all__ = ["add_arguments", "run"]
