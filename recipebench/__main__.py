"""``python -m recipebench`` is the ``recipebench`` command."""
import sys

from recipebench.harness.cli import main

sys.exit(main())
