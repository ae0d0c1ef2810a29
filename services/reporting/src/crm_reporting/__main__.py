"""``python -m crm_reporting [serve|migrate]``."""

import sys

from crm_platform.runtime import main as run
from crm_reporting.server import SPEC


def main() -> int:
    """Console entry point."""
    return run(SPEC)


if __name__ == "__main__":
    sys.exit(main())
