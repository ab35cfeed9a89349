"""``python -m stemdeck.daemon.cli``: the ``stemdeck`` command."""

import sys

from . import main

sys.exit(main())
