"""``python -m runbook_lib.cli``: the same as the ``runbook`` command (the lab starts its load this way)."""

import sys

from runbook_lib.cli.commands import main

sys.exit(main())
