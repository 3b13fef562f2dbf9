"""The dashboard's REST API, WebSocket and web page (FastAPI), over the replica's live view.

Reads answer from the view this replica keeps of every stream and from the owning services'
Postgres schemas; what nobody has published yet is null, an empty table an empty list, a table
that does not exist yet is `available: false` with the reason. Mutating endpoints need the bearer
token from configuration, are audited in `dashboard.audit_log`, and answer once their Commands are
on `ctl.commands` (see `commands`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from importlib import metadata, resources
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import numpy as np
import structlog
from fastapi import Depends, FastAPI, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from redis.exceptions import RedisError

from volguard_common import clock, events, streams
from volguard_common.bus import BusConfig, stream_report
from volguard_common.events.surface_columns import IvFlag
from volguard_common.logging import is_sensitive_name
from volguard_common.quant import sabr
from volguard_common.service import ServiceContext
from volguard_common.settings import Settings
from volguard_dashboard_api import commands
from volguard_dashboard_api.domain.view import LiveView, vol_summary
from volguard_dashboard_api.runtime import Dashboard

log = structlog.get_logger("volguard.dashboard.api")

STATIC = resources.files("volguard_dashboard_api").joinpath("static")
PLOTLY_JS = Path(str(resources.files("plotly").joinpath("package_data", "plotly.min.js")))

# How long a mutating request waits for its Commands to reach ctl.commands before answering 202.
CONFIRM_TIMEOUT_S = 10.0

ContextGetter = Callable[[], ServiceContext | None]


# --------------------------------------------------------------------------------------------------
# Request and response bodies


class CommandRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=500, description="Why, in the operator's words (audited).")

    @field_validator("reason")
    @classmethod
    def _printable(cls, reason: str) -> str:
        # Postgres text holds no NUL and the audit log is read by people: plain printable UTF-8 only.
        try:
            reason.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("reason must be valid UTF-8 text") from None
        if any(ord(c) < 32 or ord(c) == 127 for c in reason):
            raise ValueError("reason must not contain control characters")
        return reason


class FlattenRequest(CommandRequest):
    bucket: events.Bucket | None = Field(default=None, description="Flatten one bucket; all when omitted.")


class CapitalAdjustRequest(CommandRequest):
    weekly_pct: Decimal = Field(gt=0, le=100, max_digits=6, decimal_places=3)
    monthly_pct: Decimal = Field(gt=0, le=100, max_digits=6, decimal_places=3)
    intraday_pct: Decimal = Field(gt=0, le=100, max_digits=6, decimal_places=3)

    @model_validator(mode="after")
    def _whole_account(self) -> CapitalAdjustRequest:
        total = self.weekly_pct + self.monthly_pct + self.intraday_pct
        if total != 100:
            raise ValueError(f"bucket percentages must add up to 100, got {total}")
        return self


class CommandResponse(BaseModel):
    action: str
    commands: list[str] = Field(description="The CommandKind of each Command published.")
    event_ids: list[str] = Field(description="Event ids of the Commands on ctl.commands.")
    entry_ids: list[str] | None = Field(description="Stream entry ids; null when not yet relayed (202).")
    on_stream: bool


class RefreshResponse(BaseModel):
    refreshed: bool
    reason: str
    command: CommandResponse | None


# --------------------------------------------------------------------------------------------------
# Helpers


def _json(model: BaseModel | None) -> Any:
    return None if model is None else model.model_dump(mode="json")


def _finite(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else float(value)


def _flags(bits: int) -> list[str]:
    return [flag.name for flag in IvFlag if flag.name is not None and bits & flag]


def chain_of(vol: events.VolSnapshot, expiry: date) -> dict[str, Any] | None:
    """One expiry's strikes with our IVs, Greeks and quote flags as plain JSON (NaN → null)."""
    block = next((e for e in vol.expiries if e.expiry == expiry), None)
    if block is None:
        return None
    surface = block.surface
    columns = {
        name: getattr(surface, name)
        for name in (
            "strike",
            "iv_call",
            "iv_put",
            "call_delta",
            "call_gamma",
            "call_vega",
            "call_theta",
            "put_delta",
            "put_gamma",
            "put_vega",
            "put_theta",
        )
    }
    rows = []
    for i in range(len(columns["strike"])):
        row: dict[str, Any] = {name: _finite(float(col[i])) for name, col in columns.items()}
        row["call_flags"] = _flags(int(surface.call_flags[i]))
        row["put_flags"] = _flags(int(surface.put_flags[i]))
        rows.append(row)
    sabr_curve = None
    seconds = (clock.expiry_cutoff(block.expiry) - vol.ts_event).total_seconds()
    if block.sabr is not None and seconds > 0:
        # The fit's own convention (analytics): ACT/365 years to the expiry cutoff.
        years = seconds / (365 * 24 * 3600)
        strikes = np.asarray(columns["strike"], dtype=np.float64)
        s = block.sabr
        fitted = sabr.vol(block.forward, strikes, years, s.alpha, s.beta, s.rho, s.nu)
        sabr_curve = [_finite(float(v)) for v in fitted]
    return {
        "expiry": block.expiry.isoformat(),
        "ts_event": vol.ts_event.isoformat(),
        "forward": block.forward,
        "atm_strike": block.atm_strike,
        "atm_iv": block.atm_iv,
        "sabr": _json(block.sabr),
        "sabr_iv": sabr_curve,
        "strikes": rows,
    }


async def _table_exists(pool: asyncpg.Pool, qualified: str) -> bool:
    return bool(await pool.fetchval("SELECT to_regclass($1) IS NOT NULL", qualified))


async def _rows_of(pool: asyncpg.Pool, qualified: str, order: str, limit: int, offset: int) -> dict[str, Any]:
    """Rows of another service's table as JSON; `available: false` until that table exists."""
    if not await _table_exists(pool, qualified):
        return {"available": False, "reason": f"{qualified} does not exist yet", "items": None}
    # The names are ours (constants below), never the request's.
    rows = await pool.fetch(
        f"SELECT row_to_json(t)::text AS row FROM {qualified} t ORDER BY {order} DESC LIMIT $1 OFFSET $2",
        limit,
        offset,
    )
    return {"available": True, "reason": "", "items": [json.loads(r["row"]) for r in rows]}


def _page(items: list[Any], limit: int, offset: int) -> dict[str, Any]:
    return {"total": len(items), "limit": limit, "offset": offset, "items": items[offset : offset + limit]}


def _config_summary(settings: Settings) -> dict[str, Any]:
    """Every setting except secrets and connection strings (which may carry passwords)."""
    summary: dict[str, Any] = {}
    for name, value in settings.model_dump(mode="json").items():
        if is_sensitive_name(name) or isinstance(getattr(settings, name), SecretStr) or name.endswith("_url"):
            summary[f"{name}_configured"] = value not in (None, "")
            continue
        summary[name] = value
    return summary


# --------------------------------------------------------------------------------------------------
# Dependencies: the running replica and the operator

bearer = HTTPBearer(auto_error=False, description="VOLGUARD_DASHBOARD_TOKEN")


def running(request: Request) -> tuple[ServiceContext, Dashboard]:
    context = request.app.state.get_context()
    dashboard = None if context is None else context.extensions.get("dashboard")
    if context is None or not isinstance(dashboard, Dashboard):
        raise HTTPException(503, "the dashboard is starting")
    return context, dashboard


Running = Annotated[tuple[ServiceContext, Dashboard], Depends(running)]


async def operator(
    request: Request,
    run: Running,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """Who asks, once the bearer token checks out; refusals are audited too."""
    context, _ = run
    client = request.client.host if request.client is not None else "unknown"
    token = None if credentials is None else credentials.credentials
    actor = commands.actor_of(client, token)
    expected = context.settings.dashboard_token
    if token is None:
        await commands.audit(
            context.pool, actor=actor, action=request.url.path, request={}, outcome="refused",
            detail="no bearer token",
        )  # fmt: skip
        raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    if expected is None or not expected.get_secret_value():
        detail = "no dashboard token is configured (VOLGUARD_DASHBOARD_TOKEN): commands are disabled"
    elif not hmac.compare_digest(token.encode(), expected.get_secret_value().encode()):
        detail = "wrong token"
    else:
        return actor
    await commands.audit(
        context.pool, actor=actor, action=request.url.path, request={}, outcome="refused", detail=detail
    )
    raise HTTPException(403, detail)


Operator = Annotated[str, Depends(operator)]


# --------------------------------------------------------------------------------------------------
# The app


def build_api(get_context: ContextGetter) -> FastAPI:
    api = FastAPIOffline(
        title="VolGuard dashboard",
        description="Live view of the VolGuard trading system and its operator controls.",
        version=metadata.version("volguard-dashboard-api"),
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    api.state.get_context = get_context

    async def issue(
        context: ServiceContext,
        dashboard: Dashboard,
        actor: str,
        action: str,
        request: BaseModel,
        kinds: list[tuple[events.CommandKind, dict[str, Any]]],
    ) -> JSONResponse:
        built = [
            events.Command(
                ts_event=dashboard.exchange_now(),
                source=context.source,
                command=kind,
                issued_by=actor[:64],
                reason=getattr(request, "reason", "") or action,
                **arguments,
            )
            for kind, arguments in kinds
        ]
        names = [c.command.value for c in built]
        try:
            published = await commands.publish_commands(
                context.pool,
                built,
                actor=actor,
                action=action,
                request=request.model_dump(mode="json"),
                confirm_timeout_s=CONFIRM_TIMEOUT_S,
            )
        except commands.NotOnStream as exc:
            log.warning("commands committed but not yet on ctl.commands", action=action, error=str(exc))
            body = CommandResponse(
                action=action, commands=names, event_ids=[c.event_id for c in built], entry_ids=None,
                on_stream=False,
            )  # fmt: skip
            return JSONResponse(body.model_dump(mode="json"), status_code=202)
        body = CommandResponse(
            action=action, commands=names, event_ids=published.event_ids, entry_ids=published.entry_ids,
            on_stream=True,
        )  # fmt: skip
        return JSONResponse(body.model_dump(mode="json"), status_code=200)

    command_responses: dict[int | str, dict[str, Any]] = {
        202: {"model": CommandResponse, "description": "Committed; not yet relayed to ctl.commands."},
        401: {"description": "No bearer token."},
        403: {"description": "Wrong token, or no token configured."},
    }

    # ---- status and the page's data ----------------------------------------------------------

    @api.get("/api/status")
    async def status(run: Running) -> dict[str, Any]:
        context, dashboard = run
        view = dashboard.view
        return {
            "instance": context.settings.instance,
            "mode": context.settings.mode,
            "feed": context.settings.feed,
            "trading_state": _json(view.trading_state),
            "feed_status": _json(view.feed),
            "broker_health": _json(view.broker),
            "last_update": None if view.last_update() is None else view.last_update().isoformat(),  # type: ignore[union-attr]
            "websocket_clients": len(dashboard.hub.clients),
        }

    @api.get("/api/dashboard/data")
    async def dashboard_data(run: Running) -> dict[str, Any]:
        _, dashboard = run
        return dashboard.kpis()

    @api.get("/api/dashboard/full")
    async def dashboard_full(run: Running) -> dict[str, Any]:
        context, dashboard = run
        view = dashboard.view
        vol = view.vol
        return {
            "kpis": dashboard.kpis(),
            "volatility": _json(vol),
            "chains": [] if vol is None else [chain_of(vol, e.expiry) for e in vol.expiries],
            "portfolio": _json(view.portfolio),
            "trading_state": _json(view.trading_state),
            "limits": _limits(context.settings),
            "orders": [_json(o) for o in reversed(view.orders.values())][:100],
            "fills": [_json(f) for f in reversed(view.fills)][:100],
            "decisions": [_json(d) for d in reversed(view.decisions)][:100],
            "alerts": [_json(a) for a in reversed(view.alerts)][:100],
            "pnl_history": _pnl(view),
            "volatility_history": await _vol_history(context.pool, dashboard, 2_000),
        }

    @api.get("/api/analytics/volatility")
    async def analytics_volatility(run: Running) -> dict[str, Any]:
        _, dashboard = run
        vol = dashboard.view.vol
        return {"summary": None if vol is None else vol_summary(vol), "snapshot": _json(vol)}

    @api.get("/api/analytics/strategies")
    async def analytics_strategies(run: Running) -> dict[str, Any]:
        # Until strategy has published on st.recommendations, nothing is known: not an empty list.
        latest = run[1].view.recommendations
        if latest is None:
            return {
                "available": False,
                "reason": "strategy has published no recommendations yet",
                "recommendations": None,
            }
        return {
            "available": True,
            "reason": "",
            "ts_event": latest.ts_event.isoformat(),
            "vol_event_id": latest.vol_event_id,
            "correlation_id": latest.correlation_id,
            "recommendations": [r.model_dump(mode="json") for r in latest.recommendations],
            "waits": list(latest.waits),
        }

    @api.get("/api/capital/allocation")
    async def capital_allocation(run: Running) -> dict[str, Any]:
        context, dashboard = run
        s = context.settings
        portfolio = dashboard.view.portfolio
        return {
            "configured_pct": {
                "WEEKLY": str(s.bucket_weekly_pct),
                "MONTHLY": str(s.bucket_monthly_pct),
                "INTRADAY": str(s.bucket_intraday_pct),
            },
            "account_capital": None if portfolio is None else str(portfolio.account_capital),
            "buckets": None if portfolio is None else [_json(b) for b in portfolio.buckets],
            "as_of": None if portfolio is None else portfolio.ts_event.isoformat(),
        }

    @api.post("/api/capital/adjust", response_model=CommandResponse, responses=command_responses)
    async def capital_adjust(body: CapitalAdjustRequest, actor: Operator, run: Running) -> JSONResponse:
        context, dashboard = run
        portfolio = dashboard.view.portfolio
        account = portfolio.account_capital if portfolio is not None else context.settings.account_size
        shares = {
            events.Bucket.WEEKLY: body.weekly_pct,
            events.Bucket.MONTHLY: body.monthly_pct,
            events.Bucket.INTRADAY: body.intraday_pct,
        }
        kinds = [
            (
                events.CommandKind.SET_CAPITAL,
                {"bucket": bucket, "capital": (account * pct / 100).quantize(Decimal("0.01"))},
            )
            for bucket, pct in shares.items()
        ]
        return await issue(context, dashboard, actor, "capital/adjust", body, kinds)

    @api.get("/api/trades/active")
    async def trades_active(run: Running) -> dict[str, Any]:
        portfolio = run[1].view.portfolio
        return {
            "as_of": None if portfolio is None else portfolio.ts_event.isoformat(),
            "trades": None if portfolio is None else [_json(t) for t in portfolio.trades],
        }

    @api.get("/api/trades/history")
    async def trades_history(
        run: Running,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> dict[str, Any]:
        return await _rows_of(run[0].pool, "risk.trades", "1", limit, offset)

    @api.get("/api/risk/report")
    async def risk_report(run: Running) -> dict[str, Any]:
        context, dashboard = run
        view = dashboard.view
        portfolio = view.portfolio
        return {
            "trading_state": _json(view.trading_state),
            "net_greeks": None if portfolio is None else _json(portfolio.net_greeks),
            "limits": _limits(context.settings),
            "margin_used": None
            if portfolio is None or portfolio.margin_used is None
            else str(portfolio.margin_used),
            "margin_available": None
            if portfolio is None or portfolio.margin_available is None
            else str(portfolio.margin_available),
            "day_pnl": None if portfolio is None or portfolio.day_pnl is None else str(portfolio.day_pnl),
            "reconciled": None if portfolio is None else portfolio.reconciled,
            "recent_decisions": [_json(d) for d in list(view.decisions)[-20:]],
        }

    # ---- operator commands -------------------------------------------------------------------

    @api.post("/api/emergency/kill-switch", response_model=CommandResponse, responses=command_responses)
    async def kill_switch(actor: Operator, run: Running, body: CommandRequest | None = None) -> JSONResponse:
        request = body or CommandRequest()
        return await issue(
            *run, actor, "emergency/kill-switch", request, [(events.CommandKind.KILL_SWITCH, {})]
        )

    @api.post("/api/emergency/flatten", response_model=CommandResponse, responses=command_responses)
    async def flatten(actor: Operator, run: Running, body: FlattenRequest | None = None) -> JSONResponse:
        request = body or FlattenRequest()
        arguments: dict[str, Any] = {} if request.bucket is None else {"bucket": request.bucket}
        return await issue(
            *run, actor, "emergency/flatten", request, [(events.CommandKind.FLATTEN, arguments)]
        )

    @api.post("/api/emergency/circuit-breaker", response_model=CommandResponse, responses=command_responses)
    async def circuit_breaker(
        actor: Operator, run: Running, body: CommandRequest | None = None
    ) -> JSONResponse:
        request = body or CommandRequest()
        kinds: list[tuple[events.CommandKind, dict[str, Any]]] = [(events.CommandKind.CIRCUIT_BREAKER, {})]
        return await issue(*run, actor, "emergency/circuit-breaker", request, kinds)

    @api.post("/api/start", response_model=CommandResponse, responses=command_responses)
    async def start(actor: Operator, run: Running, body: CommandRequest | None = None) -> JSONResponse:
        return await issue(*run, actor, "start", body or CommandRequest(), [(events.CommandKind.RESUME, {})])

    @api.post("/api/stop", response_model=CommandResponse, responses=command_responses)
    async def stop(actor: Operator, run: Running, body: CommandRequest | None = None) -> JSONResponse:
        return await issue(*run, actor, "stop", body or CommandRequest(), [(events.CommandKind.PAUSE, {})])

    @api.post("/api/acknowledge", response_model=CommandResponse, responses=command_responses)
    async def acknowledge(actor: Operator, run: Running, body: CommandRequest | None = None) -> JSONResponse:
        request = body or CommandRequest()
        return await issue(*run, actor, "acknowledge", request, [(events.CommandKind.ACKNOWLEDGE, {})])

    @api.post("/api/data/refresh", response_model=RefreshResponse, responses=command_responses)
    async def data_refresh(actor: Operator, run: Running, body: CommandRequest | None = None) -> JSONResponse:
        context, dashboard = run
        request = body or CommandRequest()
        if context.settings.feed != "upstox":
            reason = f"feed {context.settings.feed}: the simulated market has no instrument master to reload"
            await commands.audit(
                context.pool, actor=actor, action="data/refresh", request=request.model_dump(mode="json"),
                outcome="nothing to do", detail=reason,
            )  # fmt: skip
            return JSONResponse(
                RefreshResponse(refreshed=False, reason=reason, command=None).model_dump(mode="json")
            )
        issued = await issue(
            context, dashboard, actor, "data/refresh", request, [(events.CommandKind.REFRESH_DATA, {})]
        )
        command = CommandResponse.model_validate_json(bytes(issued.body))
        reason = "market_data reloads the instrument master and the calendar"
        body_out = RefreshResponse(refreshed=command.on_stream, reason=reason, command=command)
        return JSONResponse(body_out.model_dump(mode="json"), status_code=issued.status_code)

    # ---- system ------------------------------------------------------------------------------

    @api.get("/api/metrics")
    async def api_metrics(run: Running) -> dict[str, Any]:
        _, dashboard = run
        return {
            "websocket_clients": len(dashboard.hub.clients),
            "websocket_dropped_slow": dashboard.hub.dropped_slow,
            "streams": {
                name: {
                    "received": count.received,
                    "last_entry_id": count.last_entry_id,
                    "last_ts_event": None if count.last_ts_event is None else count.last_ts_event.isoformat(),
                }
                for name, count in sorted(dashboard.view.counts.items())
            },
            "notifications": dashboard.notifier.counts() if dashboard.notifier is not None else {},
        }

    @api.get("/api/system/health/detailed")
    async def health_detailed(run: Running) -> dict[str, Any]:
        context, dashboard = run
        checks: dict[str, Any] = {}
        try:
            checks["redis"] = bool(await asyncio.wait_for(context.redis.ping(), timeout=2))  # type: ignore[arg-type]
        except (RedisError, OSError, TimeoutError) as exc:
            checks["redis"] = False
            checks["redis_error"] = repr(exc)
        try:
            checks["postgres"] = await asyncio.wait_for(context.pool.fetchval("SELECT 1"), timeout=2) == 1
        except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
            checks["postgres"] = False
            checks["postgres_error"] = repr(exc)
        view = dashboard.view
        return {
            "checks": checks,
            "consumer_group": context.consumer.group,
            "feed_status": _json(view.feed),
            "broker_health": _json(view.broker),
            "trading_state": _json(view.trading_state),
            "last_update": None if view.last_update() is None else view.last_update().isoformat(),  # type: ignore[union-attr]
        }

    @api.get("/api/data/sources")
    async def data_sources(run: Running) -> dict[str, Any]:
        context, dashboard = run
        return {
            "mode": context.settings.mode,
            "feed": context.settings.feed,
            "feed_status": _json(dashboard.view.feed),
            "broker": _json(dashboard.view.broker),
        }

    @api.get("/api/version")
    async def version() -> dict[str, Any]:
        return {
            "dashboard_api": metadata.version("volguard-dashboard-api"),
            "volguard_common": metadata.version("volguard-common"),
            "schemas": {name: getattr(cls, "SCHEMA_VERSION", 1) for name, cls in _event_classes().items()},
        }

    @api.get("/api/config/summary")
    async def config_summary(run: Running) -> dict[str, Any]:
        return _config_summary(run[0].settings)

    # ---- history and tables ------------------------------------------------------------------

    @api.get("/api/orders")
    async def orders(
        run: Running,
        status: events.OrderStatus | None = None,
        basket_id: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> dict[str, Any]:
        found = [
            _json(o)
            for o in reversed(run[1].view.orders.values())
            if (status is None or o.status is status) and (basket_id is None or o.basket_id == basket_id)
        ]
        return _page(found, limit, offset)

    @api.get("/api/fills")
    async def fills(
        run: Running,
        basket_id: Annotated[str | None, Query(max_length=64)] = None,
        instrument_key: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> dict[str, Any]:
        found = [
            _json(f)
            for f in reversed(run[1].view.fills)
            if (basket_id is None or f.basket_id == basket_id)
            and (instrument_key is None or f.instrument_key == instrument_key)
        ]
        return _page(found, limit, offset)

    @api.get("/api/history/pnl")
    async def pnl_history(run: Running) -> dict[str, Any]:
        return {"points": _pnl(run[1].view)}

    @api.get("/api/history/volatility")
    async def volatility_history(
        run: Running, limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000
    ) -> dict[str, Any]:
        return {"points": await _vol_history(run[0].pool, run[1], limit)}

    @api.get(
        "/api/chain/{expiry}",
        responses={404: {"description": "No VolSnapshot yet, or the expiry is not in the latest one."}},
    )
    async def chain(expiry: date, run: Running) -> dict[str, Any]:
        vol = run[1].view.vol
        if vol is None:
            raise HTTPException(404, "no VolSnapshot received yet")
        found = chain_of(vol, expiry)
        if found is None:
            known = [e.expiry.isoformat() for e in vol.expiries]
            raise HTTPException(404, f"expiry {expiry} not in the latest snapshot; known: {known}")
        return found

    @api.get("/api/alerts")
    async def alerts(
        run: Running,
        severity: events.Severity | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> dict[str, Any]:
        found = [_json(a) for a in reversed(run[1].view.alerts) if severity is None or a.severity is severity]
        return _page(found, limit, offset)

    @api.get("/api/decisions")
    async def decisions(
        run: Running,
        approved: bool | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> dict[str, Any]:
        found = [
            _json(d) for d in reversed(run[1].view.decisions) if approved is None or d.approved == approved
        ]
        return _page(found, limit, offset)

    @api.get("/api/streams")
    async def stream_stats(run: Running) -> list[dict[str, Any]]:
        context, _ = run
        config = BusConfig.from_settings(context.settings)
        reports = [await stream_report(context.redis, config, s.name) for s in streams.ALL_STREAMS]
        return [
            {
                "stream": r.stream,
                "length": r.length,
                "last_id": r.last_id,
                "dlq_length": r.dlq_length,
                "groups": [vars_of(g) for g in r.groups],
            }
            for r in reports
        ]

    @api.get("/api/strategy/journal")
    async def strategy_journal(
        run: Running,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> dict[str, Any]:
        return await _rows_of(run[0].pool, "strategy.journal", "1", limit, offset)

    # ---- live --------------------------------------------------------------------------------

    @api.websocket("/ws")
    async def live(websocket: WebSocket) -> None:
        context = get_context()
        dashboard = None if context is None else context.extensions.get("dashboard")
        if not isinstance(dashboard, Dashboard):
            await websocket.close(code=1013)
            return
        await websocket.accept()
        client = dashboard.hub.join()
        await websocket.send_text(dashboard.hello())
        dropped = asyncio.create_task(client.dropped.wait())
        # The page sends nothing; reading is how a closed connection is noticed.
        closed = asyncio.create_task(_until_closed(websocket))
        message: asyncio.Task[str] | None = None
        try:
            while True:
                message = asyncio.create_task(client.queue.get())
                done, _ = await asyncio.wait({message, dropped, closed}, return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    return
                if dropped in done:
                    await websocket.close(code=1013, reason="too slow; reconnect")
                    return
                await websocket.send_text(message.result())
        except (WebSocketDisconnect, RuntimeError, OSError):
            return
        finally:
            for task in (message, dropped, closed):
                if task is not None:
                    task.cancel()
            dashboard.hub.leave(client)

    # ---- the page ----------------------------------------------------------------------------

    @api.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC.joinpath("index.html")))

    @api.get("/static/plotly.min.js", include_in_schema=False)
    async def plotly_js() -> FileResponse:
        return FileResponse(PLOTLY_JS, media_type="application/javascript")

    api.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return api


async def _until_closed(websocket: WebSocket) -> None:
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


def vars_of(group: Any) -> dict[str, Any]:
    return {name: getattr(group, name) for name in group.__slots__}


def _event_classes() -> dict[str, Any]:
    return {cls.__name__: cls for types in events.EVENTS_ON.values() for cls in types}


def _limits(settings: Settings) -> dict[str, float]:
    return {"delta": settings.max_delta, "gamma": settings.max_gamma, "vega": settings.max_vega}


def _pnl(view: LiveView) -> list[dict[str, Any]]:
    return [
        {"ts_event": ts.isoformat(), "day_pnl": day, "realised": realised, "unrealised": unrealised}
        for ts, day, realised, unrealised in view.pnl
    ]


async def _vol_history(pool: asyncpg.Pool, dashboard: Dashboard, limit: int) -> list[dict[str, Any]]:
    """Persisted VolSnapshots (analytics keeps one a minute) plus what this replica saw since."""
    points: dict[datetime, dict[str, Any]] = {}
    if await _table_exists(pool, "analytics.vol_snapshots"):
        rows = await pool.fetch(
            "SELECT ts_event, atm_iv_front, vix, regime, "
            "(payload->'realised'->>'yang_zhang')::float8 AS rv, "
            "(payload->'garch'->>'vol')::float8 AS garch, "
            "(payload->'expiries'->0->>'straddle_price')::float8 AS straddle, "
            "(payload->'expiries'->0->'expected_move'->>'points')::float8 AS expected_move "
            "FROM analytics.vol_snapshots ORDER BY ts_event DESC LIMIT $1",
            limit,
        )
        for r in rows:
            points[r["ts_event"]] = {
                "ts_event": clock.to_ist(r["ts_event"]).isoformat(),
                "atm_iv": r["atm_iv_front"],
                "vix": r["vix"],
                "regime": r["regime"],
                "realised": r["rv"],
                "garch": r["garch"],
                "straddle": r["straddle"],
                "expected_move": r["expected_move"],
            }
    for ts, point in dashboard.vol_points:
        points[ts] = point
    return [points[ts] for ts in sorted(points)][-limit:]
