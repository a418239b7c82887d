"""``python -m c1000k`` (from bench/): the C1000K command line."""

import sys

from c1000k.cli import main

sys.exit(main())
