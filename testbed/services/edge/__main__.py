"""``python -m testbed.services.edge --config F``."""

import sys

from testbed.services.edge.server import main

sys.exit(main())
