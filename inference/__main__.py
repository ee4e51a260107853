"""Allow ``python -m inference``."""

import sys

from .cli import main

sys.exit(main())
