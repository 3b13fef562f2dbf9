"""The risk service in-process against real Redis and Postgres: commands, decisions and a restart."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypeVar

import pytest
from redis.asyncio import Redis

from tests.support.samples import sample_intent
from tests.support.services import running_service
from tests.support.waiting import eventually
from volguard_common import events
from volguard_common.bus import BusConfig, Publisher
from volguard_common.clock import IST
from volguard_common.settings import Settings
from volguard_risk.app import SPEC as RISK

T0 = datetime(2026, 12, 7, 11, 0, tzinfo=IST)


@pytest.fixture
def risk_settings(settings: Settings, fresh_database_url: str) -> Settings:
    # A database of the test's own: the restart must find only what this test's risk wrote.
    return settings.model_copy(update={"database_url": fresh_database_url})


async def on_stream(redis: Redis, settings: Settings, stream: str) -> list[events.Event]:
    entries = await redis.xrange(f"{settings.stream_namespace}{stream}")
    return [events.parse_event(fields[b"event"]) for _, fields in entries]


E = TypeVar("E", bound=events.Event)


def of_type(found: Sequence[events.Event], kind: type[E]) -> list[E]:
    return [e for e in found if isinstance(e, kind)]


def command(kind: events.CommandKind, **arguments: object) -> events.Command:
    return events.Command(
        ts_event=T0,
        source="cli/test",
        command=kind,
        issued_by="ops",
        reason="test",
        **arguments,  # type: ignore[arg-type]
    )


async def decision_for(redis: Redis, settings: Settings, intent_id: str) -> events.RiskDecision | None:
    decisions = of_type(await on_stream(redis, settings, "rk.decisions"), events.RiskDecision)
    return next((d for d in decisions if d.intent_id == intent_id), None)


async def test_a_kill_switch_halts_trading_within_one_event_flattens_and_survives_a_restart(
    redis: Redis, risk_settings: Settings
) -> None:
    publisher = Publisher(
        redis, BusConfig.from_settings(risk_settings), service="dashboard_api", source="cli/test"
    )
    async with running_service(RISK, risk_settings, redis):
        # A fresh start has not compared its book with execution's yet: REDUCING, entries refused.
        states = await eventually(
            lambda: _states(redis, risk_settings), what="the start-up state on rk.state"
        )
        assert states[-1].state is events.TradingStateKind.REDUCING
        await publisher.publish(command(events.CommandKind.KILL_SWITCH))
        flatten = await eventually(lambda: _flattens(redis, risk_settings), what="FlattenAll on ex.commands")
        assert [f.reason for f in flatten] == [events.ExitReason.KILL_SWITCH]
        states = await _states(redis, risk_settings)
        assert states[-1].state is events.TradingStateKind.FLATTENING
        assert events.TradingCause.KILL_SWITCH in [c.cause for c in states[-1].causes]
        # The very next intent is refused by the trading state.
        first = sample_intent(T0 + timedelta(seconds=1))
        await publisher_for_strategy(redis, risk_settings).publish(first)
        verdict = await eventually(
            lambda: decision_for(redis, risk_settings, first.intent_id), what="a decision on the first intent"
        )
        assert not verdict.approved
        assert next(c for c in verdict.checks if c.name == "trading_state").message.startswith(
            "FLATTENING does not allow ENTRY"
        )
        # Execution reports no working order and the book holds nothing: FLATTENING ends in HALTED.
        await Publisher(
            redis, BusConfig.from_settings(risk_settings), service="execution", source="execution/test"
        ).publish(
            events.BrokerHealth(
                ts_event=T0 + timedelta(seconds=2),
                source="execution/test",
                broker="paper",
                connected=True,
                latency_ms=None,
                rate_limit=events.RateLimitHeadroom(per_second=10, per_minute=500, per_30_minutes=2000),
                token_expires_at=None,
                open_orders=0,
                in_flight_unknown=0,
                reconciled=False,
            )
        )

        async def halted() -> bool:
            states = await _states(redis, risk_settings)
            return states[-1].state is events.TradingStateKind.HALTED

        await eventually(halted, what="HALTED once the book is flat")
    async with running_service(RISK, risk_settings, redis):
        second = sample_intent(T0 + timedelta(seconds=2))
        await publisher_for_strategy(redis, risk_settings).publish(second)
        verdict = await eventually(
            lambda: decision_for(redis, risk_settings, second.intent_id), what="a decision after the restart"
        )
        assert next(c for c in verdict.checks if c.name == "trading_state").message.startswith(
            "HALTED does not allow ENTRY"
        )
    # One FlattenAll for one kill switch: the restart re-sent nothing.
    assert len(await _flattens(redis, risk_settings)) == 1


async def test_a_reallocation_that_does_not_sum_to_100_is_refused_with_an_alert(
    redis: Redis, risk_settings: Settings
) -> None:
    publisher = Publisher(
        redis, BusConfig.from_settings(risk_settings), service="dashboard_api", source="cli/test"
    )
    async with running_service(RISK, risk_settings, redis):
        await publisher.publish(
            command(
                events.CommandKind.SET_CAPITAL,
                weekly_pct=Decimal(40),
                monthly_pct=Decimal(40),
                intraday_pct=Decimal(10),
            )
        )
        alerts = await eventually(lambda: _alerts(redis, risk_settings), what="an alert for the refusal")
    assert "sum to 100" in alerts[0].message


def publisher_for_strategy(redis: Redis, settings: Settings) -> Publisher:
    return Publisher(redis, BusConfig.from_settings(settings), service="strategy", source="strategy/test")


async def _states(redis: Redis, settings: Settings) -> list[events.TradingState]:
    return of_type(await on_stream(redis, settings, "rk.state"), events.TradingState)


async def _flattens(redis: Redis, settings: Settings) -> list[events.FlattenAll]:
    return of_type(await on_stream(redis, settings, "ex.commands"), events.FlattenAll)


async def _alerts(redis: Redis, settings: Settings) -> list[events.Alert]:
    found = of_type(await on_stream(redis, settings, "sys.alerts"), events.Alert)
    return [a for a in found if a.code == "RISK_COMMAND_REFUSED"]
