"""Backtests: the services' domain components wired in one deterministic process, in event time.

`domain/` holds what a backtest decides on its own, with no I/O: the dated days of a run, the records
it keeps and the report computed from them. `desks.py` and `engine.py` wire the trading services'
domain components (analytics' VolEngine, the Strategist, risk's state machine, ledger, portfolio and
checks, execution's basket guard on the paper broker) into one event loop; `app.py` runs it and writes
the report (`report_html.py` renders the HTML).
"""
