"""``python -m mnist_xp`` runs the command-line interface."""

import sys

from .cli import main

sys.exit(main())
