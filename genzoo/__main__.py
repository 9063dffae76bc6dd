"""``python -m genzoo`` (and ``torchrun -m genzoo``) runs the CLI."""

import sys

from genzoo.cli import main

if __name__ == "__main__":
    sys.exit(main())
