"""Write the rows the recovery service recovered back to the production Cloudflare D1 database, as SQL
files that `wrangler d1 execute --file` accepts: idempotent upserts, every statement under D1's size
limit, nothing dropped, deleted or replaced.

Public API: `add_arguments(parser)` and `run(args) -> exit code`, registered by the service CLI as
`export-d1`. See README.md in this package for the file layout and the choices behind the statements.
"""

from .cli import add_arguments, run

__all__ = ["add_arguments", "run"]
