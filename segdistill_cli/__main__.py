"""`python -m segdistill_cli` = `segdistill`."""
import sys

from .cli import main

sys.exit(main())
