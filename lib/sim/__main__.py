"""``python -m skyops.sim [build] --preset demo --seed 42 [--root DIR]``."""
import sys

from skyops.sim.cli import main

sys.exit(main())
