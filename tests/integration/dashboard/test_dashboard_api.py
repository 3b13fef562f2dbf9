"""The dashboard_api service running (uvicorn, its real app) against real Redis and Postgres:
every endpoint, auth failures, bad input, commands on ctl.commands with their audit, and /ws."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
import websockets
from pydantic import SecretStr
from redis.asyncio import Redis

from tests.support.dashboard import RunningDashboard, running_dashboard
from tests.support.waiting import eventually
from tests.unit.analytics.chains import CONFIG, TS, real_history, sabr_chain
from volguard_analytics.domain.calendar import EventCalendar
from volguard_analytics.domain.snapshot import VolEngine, deterministic_event_id
from volguard_common import events
from volguard_common.bus import BusConfig, Publisher
from volguard_common.settings import Settings

TOKEN = "operator-secret"
EXPIRIES = (date(2025, 12, 23), date(2025, 12, 30), date(2026, 1, 27))


def vol_snapshots(count: int) -> list[events.VolSnapshot]:
    """Real VolSnapshots: the analytics engine over SABR-shaped chains."""
    engine = VolEngine(CONFIG, real_history(), EventCalendar(()))
    out = []
    for i in range(count):
        ts = TS + timedelta(seconds=i)
        for kind, key, ltp in (
            (events.InstrumentKind.INDEX, "NSE_INDEX|Nifty 50", 24_000.0 + 3.0 * i),
            (events.InstrumentKind.VIX, "NSE_INDEX|India VIX", 11.0),
        ):
            tick = events.Tick(
                ts_event=ts, ts_init=ts, source="md/test", instrument_key=key, symbol=key, kind=kind, ltp=ltp,
                event_id=deterministic_event_id("md/test", ts, [key]),
            )  # fmt: skip
            if kind is events.InstrumentKind.INDEX:
                engine.observe_index(tick)
            else:
                engine.observe_vix(tick)
        out.append(engine.snapshot([sabr_chain(ts, expiry)[0] for expiry in EXPIRIES]))
    return out


def portfolio(ts: datetime, day_pnl: str) -> events.PortfolioSnapshot:
    return events.PortfolioSnapshot(
        ts_event=ts, source="risk/test", account_capital=Decimal("2000000"), positions=[], trades=[],
        buckets=[
            events.BucketState(
                bucket=events.Bucket.WEEKLY, capital_allocated=Decimal("800000"),
                capital_used=Decimal("120000"),
                realised_pnl=Decimal("0"), unrealised_pnl=Decimal("1500"), open_trades=1,
            )
        ],
        net_greeks=events.Greeks(delta=-12.0, gamma=-3.5, vega=-640.0, theta=2100.0),
        realised_pnl=Decimal("0"), unrealised_pnl=Decimal("1500"), day_pnl=Decimal(day_pnl),
        margin_used=Decimal("120000"), margin_available=Decimal("1880000"), reconciled=True,
    )  # fmt: skip


def order(ts: datetime, basket: str, status: events.OrderStatus) -> events.OrderUpdate:
    return events.OrderUpdate(
        ts_event=ts, source="execution/test", client_order_id=events.client_order_id(basket, 0, 0),
        broker_order_id=None, basket_id=basket, leg_index=0, attempt=0, instrument_key="NSE_FO|1",
        side=events.Side.SELL, quantity=65, limit_price=Decimal("101.5"), status=status, filled_qty=0,
        avg_price=None,
    )  # fmt: skip


def fill(ts: datetime, basket: str) -> events.Fill:
    return events.Fill(
        ts_event=ts, source="execution/test", fill_id=f"T-{basket}",
        client_order_id=events.client_order_id(basket, 0, 0),
        broker_order_id="B1", basket_id=basket, leg_index=0, instrument_key="NSE_FO|1", expiry=EXPIRIES[0],
        strike=24_000.0, option_type=events.OptionType.CE, side=events.Side.SELL, quantity=65,
        price=Decimal("101.5"), fees=Decimal("25.3"),
    )  # fmt: skip


def trading_state(ts: datetime, state: events.TradingStateKind) -> events.TradingState:
    return events.TradingState(
        ts_event=ts, source="risk/test", state=state, previous=events.TradingStateKind.RUNNING,
        reason=f"test: {state.value}", since=ts,
    )  # fmt: skip


@pytest.fixture
def dashboard_settings(settings: Settings, fresh_database_url: str) -> Settings:
    # A database of its own: these tests count audit rows and stored snapshots, which other tests of
    # the session (schemathesis, analytics) also write in the shared one.
    return settings.model_copy(
        update={"dashboard_token": SecretStr(TOKEN), "feed": "sim", "database_url": fresh_database_url}
    )


@pytest.fixture
async def dashboard(dashboard_settings: Settings) -> AsyncIterator[RunningDashboard]:
    async with running_dashboard(dashboard_settings) as running:
        yield running


@pytest.fixture
async def client(dashboard: RunningDashboard) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=dashboard.base_url, timeout=30) as http:
        yield http


def publisher_for(redis: Redis, settings: Settings, service: str) -> Publisher:
    return Publisher(redis, BusConfig.from_settings(settings), service=service, source=f"{service}/test")


GETS = (
    "/health",
    "/api/status",
    "/api/dashboard/data",
    "/api/dashboard/full",
    "/api/analytics/volatility",
    "/api/analytics/strategies",
    "/api/capital/allocation",
    "/api/trades/active",
    "/api/trades/history",
    "/api/risk/report",
    "/api/metrics",
    "/api/system/health/detailed",
    "/api/data/sources",
    "/api/version",
    "/api/config/summary",
    "/api/orders",
    "/api/fills",
    "/api/history/pnl",
    "/api/history/volatility",
    "/api/alerts",
    "/api/decisions",
    "/api/streams",
    "/api/strategy/journal",
)


async def test_before_anything_is_published_every_figure_is_unknown(client: httpx.AsyncClient) -> None:
    for path in GETS:
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text)
    status = (await client.get("/api/status")).json()
    assert status["trading_state"] is None
    assert status["last_update"] is None
    kpis = (await client.get("/api/dashboard/data")).json()
    assert kpis["spot"] is None
    assert kpis["day_pnl"] is None
    assert kpis["trading_state"] is None
    assert (await client.get("/api/trades/active")).json()["trades"] is None
    # Tables other services have not created yet are said to be unavailable, not empty.
    history = (await client.get("/api/trades/history")).json()
    assert history == {"available": False, "reason": "risk.trades does not exist yet", "items": None}
    strategies = (await client.get("/api/analytics/strategies")).json()
    assert strategies["available"] is False
    assert strategies["recommendations"] is None
    assert (await client.get("/api/orders")).json()["items"] == []
    assert (await client.get(f"/api/chain/{EXPIRIES[0]}")).status_code == 404
    config = (await client.get("/api/config/summary")).json()
    assert TOKEN not in json.dumps(config)
    assert config["dashboard_token_configured"] is True
    assert "database_url" not in config
    page = await client.get("/")
    assert page.status_code == 200
    assert "plotly.min.js" in page.text
    assert (await client.get("/static/plotly.min.js")).status_code == 200
    assert (await client.get("/api/docs")).status_code == 200
    # Operator docs work offline: no CDN in the Swagger page.
    assert "cdn" not in (await client.get("/api/docs")).text.lower()


async def test_the_view_follows_the_streams(
    client: httpx.AsyncClient, redis: Redis, dashboard_settings: Settings
) -> None:
    snapshots = vol_snapshots(2)
    analytics = publisher_for(redis, dashboard_settings, "analytics")
    risk = publisher_for(redis, dashboard_settings, "risk")
    execution = publisher_for(redis, dashboard_settings, "execution")
    for snapshot in snapshots:
        await analytics.publish(snapshot)
    ts = snapshots[-1].ts_event
    await risk.publish(portfolio(ts, "-2500.50"))
    await risk.publish(trading_state(ts, events.TradingStateKind.PAUSED))
    await execution.publish(order(ts, "basket-a", events.OrderStatus.OPEN))
    await execution.publish(order(ts, "basket-b", events.OrderStatus.CANCELLED))
    await execution.publish(fill(ts, "basket-b"))
    alert = events.Alert(
        ts_event=ts, source="risk/test", severity=events.Severity.WARNING, code="BUCKET_NEAR_LIMIT",
        message="weekly bucket above 90 %",
    )  # fmt: skip
    await risk.publish(alert)

    async def everything_seen() -> dict[str, Any] | None:
        full = (await client.get("/api/dashboard/full")).json()
        seen = full["volatility"] and full["portfolio"] and full["trading_state"] and full["alerts"]
        return full if seen and len(full["orders"]) == 2 and full["fills"] else None

    full = await eventually(everything_seen, what="the dashboard shows every stream's events")
    assert full["volatility"]["event_id"] == snapshots[-1].event_id
    kpis = full["kpis"]
    assert kpis["trading_state"] == "PAUSED"
    assert kpis["day_pnl"] == "-2500.50"
    assert kpis["volatility"]["spot"] == snapshots[-1].spot
    assert kpis["volatility"]["regime"] == snapshots[-1].regime.regime.value
    assert len(full["chains"]) == len(EXPIRIES)
    assert [p["ts_event"] for p in full["volatility_history"]] == [s.ts_event.isoformat() for s in snapshots]

    # The option chain of one expiry, decoded from the packed columns into plain JSON.
    chain = (await client.get(f"/api/chain/{EXPIRIES[0]}")).json()
    surface = snapshots[-1].expiries[0].surface
    assert [row["strike"] for row in chain["strikes"]] == surface.strike.tolist()
    assert len(chain["sabr_iv"]) == len(chain["strikes"])
    known = [(row["iv_call"], c) for row, c in zip(chain["strikes"], surface.iv_call.tolist(), strict=True)]
    assert all(a == b or (a is None and b != b) for a, b in known)
    assert all(isinstance(row["call_flags"], list) for row in chain["strikes"])
    assert (await client.get("/api/chain/2031-01-01")).status_code == 404
    assert (await client.get("/api/chain/not-a-date")).status_code == 422

    # Filters and paging.
    open_orders = (await client.get("/api/orders", params={"status": "OPEN"})).json()
    assert [o["basket_id"] for o in open_orders["items"]] == ["basket-a"]
    paged = (await client.get("/api/orders", params={"limit": 1, "offset": 1})).json()
    assert paged["total"] == 2
    assert len(paged["items"]) == 1
    assert (await client.get("/api/orders", params={"status": "BOGUS"})).status_code == 422
    assert (await client.get("/api/orders", params={"limit": 0})).status_code == 422
    assert (await client.get("/api/fills", params={"basket_id": "basket-b"})).json()["total"] == 1
    warnings = (await client.get("/api/alerts", params={"severity": "WARNING"})).json()
    assert [a["code"] for a in warnings["items"]] == ["BUCKET_NEAR_LIMIT"]
    risk_report = (await client.get("/api/risk/report")).json()
    assert risk_report["net_greeks"]["vega"] == -640.0
    assert risk_report["limits"]["vega"] == 1000.0
    allocation = (await client.get("/api/capital/allocation")).json()
    assert allocation["buckets"][0]["capital_used"] == "120000"
    streams_report = (await client.get("/api/streams")).json()
    assert {s["stream"]: s["length"] for s in streams_report}["an.vol"] == 2


async def _commands(redis: Redis, namespace: str) -> list[events.Command]:
    entries = await redis.xrange(f"{namespace}ctl.commands")
    return [events.parse_event(fields[b"event"]) for _, fields in entries]  # type: ignore[misc]


async def _audit(database_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch("SELECT * FROM dashboard.audit_log ORDER BY id"))
    finally:
        await conn.close()


MUTATIONS: tuple[tuple[str, dict[str, Any], list[str]], ...] = (
    ("/api/emergency/kill-switch", {"reason": "test"}, ["KILL_SWITCH"]),
    ("/api/emergency/flatten", {"bucket": "WEEKLY"}, ["FLATTEN"]),
    ("/api/emergency/circuit-breaker", {}, ["CIRCUIT_BREAKER"]),
    ("/api/start", {}, ["RESUME"]),
    ("/api/stop", {}, ["PAUSE"]),
    ("/api/acknowledge", {}, ["ACKNOWLEDGE"]),
    (
        "/api/capital/adjust",
        {"weekly_pct": "40", "monthly_pct": "50", "intraday_pct": "10"},
        ["SET_CAPITAL", "SET_CAPITAL", "SET_CAPITAL"],
    ),
)


async def test_commands_need_the_token_and_answer_once_on_ctl_commands(
    client: httpx.AsyncClient, redis: Redis, namespace: str, dashboard_settings: Settings
) -> None:
    for path, body, _ in (*MUTATIONS, ("/api/data/refresh", {}, [])):
        missing = await client.post(path, json=body)
        assert missing.status_code == 401, (path, missing.text)
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await client.post(path, json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403, (path, wrong.text)
    assert await _commands(redis, namespace) == []

    auth = {"Authorization": f"Bearer {TOKEN}"}
    published: list[str] = []
    for path, body, kinds in MUTATIONS:
        response = await client.post(path, json=body, headers=auth)
        assert response.status_code == 200, (path, response.text)
        answer = response.json()
        assert answer["commands"] == kinds
        assert answer["on_stream"] is True
        # Answered only once on the stream: the entries are there when the answer arrives.
        on_stream = {c.event_id: c for c in await _commands(redis, namespace)}
        assert set(answer["event_ids"]) <= set(on_stream)
        assert all(on_stream[e].issued_by.endswith(("token:" + "", "")) for e in answer["event_ids"])
        published.extend(answer["event_ids"])

    commands = {c.event_id: c for c in await _commands(redis, namespace)}
    assert list(commands) == published
    flatten = next(c for c in commands.values() if c.command is events.CommandKind.FLATTEN)
    assert flatten.bucket is events.Bucket.WEEKLY
    capital = {c.bucket: c.capital for c in commands.values() if c.command is events.CommandKind.SET_CAPITAL}
    assert capital == {
        events.Bucket.WEEKLY: Decimal("800000.00"),
        events.Bucket.MONTHLY: Decimal("1000000.00"),
        events.Bucket.INTRADAY: Decimal("200000.00"),
    }
    assert all(TOKEN not in c.issued_by for c in commands.values())

    # In simulation there is no instrument master to reload: said so, nothing published.
    refresh = await client.post("/api/data/refresh", json={}, headers=auth)
    assert refresh.status_code == 200
    assert refresh.json()["refreshed"] is False
    assert len(await _commands(redis, namespace)) == len(published)

    audit = await _audit(dashboard_settings.database_url)
    refused = [r for r in audit if r["outcome"] == "refused"]
    assert len(refused) == 2 * (len(MUTATIONS) + 1)
    done = [r for r in audit if r["outcome"] == "published"]
    assert [e for r in done for e in r["event_ids"]] == published
    assert all(TOKEN not in r["actor"] and "token:" in r["actor"] for r in done)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/capital/adjust", {"weekly_pct": "40", "monthly_pct": "50", "intraday_pct": "20"}),
        ("/api/capital/adjust", {"weekly_pct": "-40", "monthly_pct": "130", "intraday_pct": "10"}),
        ("/api/capital/adjust", {"weekly_pct": "forty", "monthly_pct": "50", "intraday_pct": "10"}),
        ("/api/capital/adjust", {}),
        ("/api/emergency/flatten", {"bucket": "YEARLY"}),
        ("/api/emergency/kill-switch", {"reason": "x" * 501}),
        ("/api/stop", {"unexpected": 1}),
        ("/api/stop", [1, 2]),
    ],
)
async def test_bad_input_is_a_4xx_with_a_message_and_publishes_nothing(
    client: httpx.AsyncClient, redis: Redis, namespace: str, path: str, body: Any
) -> None:
    response = await client.post(path, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"]
    assert await _commands(redis, namespace) == []


async def test_commands_are_refused_when_no_token_is_configured(settings: Settings) -> None:
    async with running_dashboard(settings) as running, httpx.AsyncClient(base_url=running.base_url) as http:
        response = await http.post("/api/emergency/kill-switch", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403
    assert "no dashboard token is configured" in response.json()["detail"]


async def test_websocket_pushes_state_as_it_happens(
    dashboard: RunningDashboard, redis: Redis, dashboard_settings: Settings
) -> None:
    risk = publisher_for(redis, dashboard_settings, "risk")
    async with websockets.connect(dashboard.ws_url) as socket:
        hello = json.loads(await socket.recv())
        assert hello["kind"] == "hello"
        assert hello["data"]["trading_state"] is None
        await risk.publish(trading_state(TS, events.TradingStateKind.HALTED))
        pushed = json.loads(await socket.recv())
    assert pushed["kind"] == "state"
    assert pushed["stream"] == "rk.state"
    assert pushed["data"]["state"] == "HALTED"
    assert pushed["entry_id"]


async def test_a_new_replica_shows_the_newest_snapshot_already_published(
    redis: Redis, dashboard_settings: Settings
) -> None:
    risk = publisher_for(redis, dashboard_settings, "risk")
    await risk.publish(trading_state(TS, events.TradingStateKind.REDUCING))
    async with (
        running_dashboard(dashboard_settings) as running,
        httpx.AsyncClient(base_url=running.base_url) as http,
    ):
        status = (await http.get("/api/status")).json()
    assert status["trading_state"]["state"] == "REDUCING"


def recommendations(ts: datetime) -> events.StrategyRecommendations:
    leg = events.OrderLeg(
        instrument_key="NSE_FO|NIFTY25DEC25500PE",
        expiry=date(2025, 12, 23),
        strike=25_500.0,
        option_type=events.OptionType.PE,
        side=events.Side.SELL,
        quantity=75,
        limit_price=Decimal("42.15"),
    )
    return events.StrategyRecommendations(
        ts_event=ts,
        source="strategy/test",
        vol_event_id=events.new_event_id(),
        recommendations=[
            events.Recommendation(
                rank=1,
                bucket=events.Bucket.WEEKLY,
                structure=events.Structure.BULL_PUT_SPREAD,
                legs=[leg],
                suitability=0.62,
                capital_required=Decimal("48000"),
                expected_return=Decimal("310.40"),
                max_loss=Decimal("7900"),
                reason="1 lot(s): scripted",
            )
        ],
        waits=["MONTHLY: cooldown: last MONTHLY entry at 10:31:00 (< 300 s)"],
    )


async def test_strategy_recommendations_are_shown_as_strategy_published_them(
    client: httpx.AsyncClient, redis: Redis, dashboard_settings: Settings
) -> None:
    published = recommendations(TS)
    await publisher_for(redis, dashboard_settings, "strategy").publish(published)

    async def shown() -> dict[str, Any] | None:
        found = (await client.get("/api/analytics/strategies")).json()
        return found if found["available"] else None

    strategies = await eventually(shown, what="the recommendations on the dashboard")
    assert strategies["vol_event_id"] == published.vol_event_id
    assert strategies["correlation_id"] == published.correlation_id
    assert [r["structure"] for r in strategies["recommendations"]] == ["BULL_PUT_SPREAD"]
    assert strategies["recommendations"][0]["expected_return"] == "310.40"
    assert strategies["waits"] == published.waits
