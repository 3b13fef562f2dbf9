"""Strategy's decisions with no I/O: which structure for which bucket, its strikes, price, size and
management. The service feeds it events through ports; the backtest engine runs the same code."""
