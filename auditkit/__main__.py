"""``python -m auditkit``: the same as the ``auditkit`` command."""
import sys

from auditkit.cli import main

sys.exit(main())
