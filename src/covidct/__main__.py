"""``python -m covidct``: the same as the ``covidct`` console script."""

import sys

from covidct.cli import main

sys.exit(main())
