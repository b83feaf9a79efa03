"""``python -m thermosgd.cli``: the ``thermosgd`` command."""

import sys

from thermosgd.cli import main

sys.exit(main())
