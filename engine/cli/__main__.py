"""``python -m engine.cli``: the ``finscore`` command without its script."""

import sys

from engine.cli import main

sys.exit(main())
