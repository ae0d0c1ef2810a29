"""``python -m crm_opportunity [serve|migrate]``."""

import sys

from crm_opportunity.server import SPEC
from crm_platform.runtime import main as run


def main() -> int:
    """Console entry point."""
    return run(SPEC)


if __name__ == "__main__":
    sys.exit(main())
