"""``python -m crm_notification [serve|migrate]``."""

import sys

from crm_notification.server import SPEC
from crm_platform.runtime import main as run


def main() -> int:
    """Console entry point."""
    return run(SPEC)


if __name__ == "__main__":
    sys.exit(main())
