"""``python -m fluxo_core.cli``: the same as the ``fluxo`` command."""

import sys

from fluxo_core.cli import main

sys.exit(main())
