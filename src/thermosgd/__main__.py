"""``python -m thermosgd``: the ``thermosgd`` command."""

import sys

from thermosgd.cli import main

sys.exit(main())
