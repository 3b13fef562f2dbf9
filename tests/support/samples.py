"""Small, valid events for tests that need one (the bus does not care what is inside)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal

from redis.asyncio import Redis

from volguard_common import events
from volguard_common.clock import IST

SESSION = datetime(2026, 1, 13, 10, 0, tzinfo=IST)


def sample_intent(ts_event: datetime = SESSION) -> events.TradeIntent:
    """A one-lot short strangle proposal on the 20-Jan-2026 weekly."""
    expiry = date(2026, 1, 20)
    legs = [
        events.OrderLeg(
            instrument_key=f"NSE_FO|{strike}{kind}",
            expiry=expiry,
            strike=float(strike),
            option_type=events.OptionType(kind),
            side=events.Side.SELL,
            quantity=65,
            limit_price=Decimal(price),
        )
        for strike, kind, price in ((26500, "CE", "42.35"), (25500, "PE", "38.10"))
    ]
    return events.TradeIntent(
        ts_event=ts_event,
        source="strategy/test",
        intent_id=f"intent-{uuid.uuid4().hex[:12]}",
        kind=events.IntentKind.ENTRY,
        bucket=events.Bucket.WEEKLY,
        structure=events.Structure.STRANGLE,
        lot_size=65,
        legs=legs,
        expected_credit=Decimal("5229.75"),
        max_loss=None,
        valid_until=ts_event + timedelta(seconds=30),
        reason="IV-RV spread wide; regime LOW_VOL",
    )


def sample_tick(ltp: float, ts_event: datetime = SESSION) -> events.Tick:
    return events.Tick(
        ts_event=ts_event,
        source="market_data/test",
        instrument_key="NSE_INDEX|Nifty 50",
        symbol="NIFTY",
        kind=events.InstrumentKind.INDEX,
        ltp=ltp,
    )


async def alert_codes(redis: Redis, namespace: str) -> list[str]:
    """Codes of the Alerts published on sys.alerts under `namespace`."""
    entries = await redis.xrange(f"{namespace}sys.alerts")
    return [events.parse_event(fields[b"event"]).code for _, fields in entries]  # type: ignore[union-attr]


def sample_command(ts_event: datetime = SESSION) -> events.Command:
    return events.Command(
        ts_event=ts_event,
        source="dashboard_api/test",
        command=events.CommandKind.PAUSE,
        issued_by="operator",
        reason="lunch",
    )


def sample_trading_state(ts_event: datetime = SESSION) -> events.TradingState:
    return events.TradingState(
        ts_event=ts_event,
        source="risk/test",
        state=events.TradingStateKind.PAUSED,
        previous=events.TradingStateKind.RUNNING,
        reason="operator paused",
        since=ts_event,
    )
