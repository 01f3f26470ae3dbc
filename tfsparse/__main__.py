"""`python -m tfsparse`: see `tfsparse.cli`."""

import sys

from tfsparse.cli import main

sys.exit(main())
