"""``python -m fluxo.cli``: the same as the ``fluxo`` command."""

import sys

from fluxo.cli import main

sys.exit(main())
