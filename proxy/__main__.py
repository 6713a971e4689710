"""`python -m proxy` is the `shiftproxy` command."""

import sys

from proxy.cli import main

sys.exit(main())
