"""``python -m runbook_lib.automation serve ...``: ``runbook serve`` without the product CLI's entry point."""

import sys

from runbook_lib.automation.cli import main

sys.exit(main())
