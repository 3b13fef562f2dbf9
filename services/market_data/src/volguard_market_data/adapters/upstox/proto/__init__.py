"""Generated protobuf for the Upstox Market Data Feed V3 (see MarketDataFeedV3.proto)."""
