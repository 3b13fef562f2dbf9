"""Risk's decisions and ledger rules, with no I/O: the service and the backtest engine drive the same code."""
