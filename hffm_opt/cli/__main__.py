"""``python -m hffm_opt.cli``: the same as the ``hffm-opt`` command."""

import sys

from . import main

sys.exit(main())
