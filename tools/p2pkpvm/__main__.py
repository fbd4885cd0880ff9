"""python -m p2pkpvm: see p2pkpvm.cli."""

import sys

from p2pkpvm.cli import main

sys.exit(main())
