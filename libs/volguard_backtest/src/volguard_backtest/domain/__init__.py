"""What a backtest decides with no I/O: its days, its records, its report."""
