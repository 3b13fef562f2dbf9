"""Upstox adapter: REST (instrument master, option chain) and the V3 market data feed.

`http` (rate-limited client, read retries, errors), `instruments` (NIFTY options from the master),
`chain` (ChainSnapshot with quality flags), `feed` (V3 WebSocket client), `source` (`UpstoxSource`,
the `ports.MarketSource` the service runs with `VOLGUARD_FEED=upstox`).
"""
