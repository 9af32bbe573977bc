"""`python -m components.monitoring`: the same command as `pipeline.py monitor` (components/monitoring/cli.py)."""

import sys

from components.monitoring.cli import main

sys.exit(main())
