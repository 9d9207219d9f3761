"""``python -m harness.cli``: the same as ``adam-bench``."""
import sys

from .main import main

sys.exit(main())
