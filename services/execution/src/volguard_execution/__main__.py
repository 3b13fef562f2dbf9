"""`python -m volguard_execution`: run the execution process alone."""

from volguard_common.service import run
from volguard_execution.app import SPEC

if __name__ == "__main__":
    run(SPEC)
