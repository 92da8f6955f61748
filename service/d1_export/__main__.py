"""`python -m service.d1_export --db PATH --out DIR [--since TIME | --upload ID]`"""

import argparse
import sys

from . import add_arguments, run


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.d1_export",
        description="Export the recovered rows as idempotent SQL files for `wrangler d1 execute --file`.",
    )
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
