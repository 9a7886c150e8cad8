"""`python -m signoff.policytest rules/` runs the suites like `signoff test rules/`."""

import sys

from signoff.cmd.test import main

sys.exit(main())
