"""`python -m ikd.train ARGS` = `ikd train ARGS`; the entry point for `torchrun --nproc_per_node N -m ikd.train`."""

import sys

from ikd.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
