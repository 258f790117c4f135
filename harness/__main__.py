"""``python -m harness`` is the ``recipebench`` command."""
import sys

from harness.cli import main

sys.exit(main())
