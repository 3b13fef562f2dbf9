"""`python -m volguard_market_data`: run the market_data process alone."""

from volguard_common.service import run
from volguard_market_data.app import SPEC

if __name__ == "__main__":
    run(SPEC)
