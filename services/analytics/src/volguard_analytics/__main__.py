"""`python -m volguard_analytics`: run the analytics process alone."""

from volguard_analytics.app import SPEC
from volguard_common.service import run

if __name__ == "__main__":
    run(SPEC)
