"""``python -m bench.colocation``."""

import sys

from bench.colocation.cli import main

sys.exit(main())
