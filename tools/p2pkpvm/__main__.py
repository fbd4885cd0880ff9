"""python -m p2pkpvm: see p2pkpvm.cli.main."""

import sys

from p2pkpvm.cli.main import main

sys.exit(main())
