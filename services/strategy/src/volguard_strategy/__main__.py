"""`python -m volguard_strategy`: run the strategy process alone."""

from volguard_common.service import run
from volguard_strategy.app import SPEC

if __name__ == "__main__":
    run(SPEC)
