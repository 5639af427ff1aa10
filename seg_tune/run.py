"""`python -m seg_tune.run SPACE.yaml ...`: the tuning service's documented entry point (README,
SLURM script). The command lives in `seg_tune.cli.run`."""

import sys

from seg_tune.cli.run import main

if __name__ == "__main__":
    sys.exit(main())
