"""`python -m volguard_dashboard_api`: run the dashboard_api process alone."""

from volguard_common.service import run
from volguard_dashboard_api.app import SPEC

if __name__ == "__main__":
    run(SPEC)
