"""`python -m volguard_risk`: run the risk process alone."""

from volguard_common.service import run
from volguard_risk.app import SPEC

if __name__ == "__main__":
    run(SPEC)
