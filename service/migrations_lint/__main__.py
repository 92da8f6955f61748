"""`python -m service.migrations_lint PATH...`"""

import argparse
import sys

from . import add_arguments, run


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.migrations_lint",
        description="Lint D1 migrations for statements that delete child rows through ON DELETE CASCADE.",
    )
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
