"""Execution domain: the pure parts of working orders at a broker, shared by the execution service and
the backtest engine.

No I/O and no wall clock here. Time is passed in (exchange time for the paper exchange and the fill
schedule, a monotonic reading for the rate limiter), quotes arrive as plain values, and the broker
answers through the caller. The modules:

- `orders`: the order state machine, slicing at the freeze quantity, and the book that keeps at most
  one live broker order per (client order id, attempt, slice).
- `upstox_status`: Upstox order statuses mapped to `OrderStatus`.
- `rate_limit`: Upstox's three order-rate windows and the SEBI retail-algo threshold.
- `paper_exchange`: an exchange simulator that fills resting limit orders against quotes.
- `fill_schedule`: the adaptive fill engine's price ladder and timing.

What the world provides comes in through small ports: the paper exchange asks a `MarginPort` whether
the account can carry an order and a `SessionCalendar` whether the market is open; charges are left to
the dated schedule (`volguard_common.charges.fill_charges`), fed by each trade's `first_fill_of_order`.
"""
