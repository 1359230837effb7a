"""``python -m safediffusion`` = the ``safediffusion`` command."""

import sys

from safediffusion.cli import main

sys.exit(main())
