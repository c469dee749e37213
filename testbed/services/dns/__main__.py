"""``python -m testbed.services.dns --config F``."""

import sys

from testbed.services.dns.server import main

sys.exit(main())
