"""volguard_market_data."""
