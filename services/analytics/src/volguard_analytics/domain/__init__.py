"""Analytics domain: pure volatility analysis, from chain snapshots and daily history to a VolSnapshot.

No I/O and no wall clock here: time is the `ts_event` of the market data, and the same inputs (including
the sequence of earlier snapshots, which carries the regime hysteresis) give the same VolSnapshot.
`snapshot.VolEngine` is the entry point; the other modules are its parts, each testable on its own.
"""
