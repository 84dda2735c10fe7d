"""``python -m tomoflow.cli``: the command line."""

import sys

from tomoflow.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())  # type: ignore[func-returns-value]  # exit status 0 when main returns
