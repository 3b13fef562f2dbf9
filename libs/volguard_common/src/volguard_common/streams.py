"""Every stream and consumer-group name in one place, with its retention.

Two kinds of stream (DESIGN §3):
- SNAPSHOT streams (`md.*`, `an.vol`, periodic state) carry the latest picture of something; they are
  capped at publish time and a consumer that falls behind may skip to the newest entry.
- LOG streams (intents, commands, reports, alerts, DLQs) carry facts that must each be handled; they
  are never trimmed below what a consumer group has not yet acknowledged. The command and report
  streams among them are also `ordered`: handled in stream order per group (see `bus`).

Physical Redis keys are `namespace + name`; the namespace is empty in production and unique per test
run, so tests never touch keys they did not create.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Retention(enum.Enum):
    SNAPSHOT = "snapshot"
    LOG = "log"


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str
    retention: Retention
    # Approximate cap (XADD MAXLEN ~) for snapshot streams; None for log streams.
    maxlen: int | None
    description: str
    # Handled in stream order per consumer group: a failing entry is retried in place and blocks the
    # ones behind it until it succeeds or is dead-lettered (a `resume` never overtakes its
    # `kill_switch`, a CancelOrders never its ExecuteBasket).
    ordered: bool = False


MD_TICKS = StreamSpec("md.ticks", Retention.SNAPSHOT, 100_000, "index, India VIX and near-future ticks")
MD_CHAIN = StreamSpec("md.chain", Retention.SNAPSHOT, 5_000, "one columnar ChainSnapshot per expiry")
MD_STATUS = StreamSpec("md.status", Retention.SNAPSHOT, 10_000, "feed health")
AN_VOL = StreamSpec("an.vol", Retention.SNAPSHOT, 10_000, "VolSnapshot: the full volatility picture")
ST_INTENTS = StreamSpec(
    "st.intents", Retention.LOG, None, "TradeIntent proposals from strategy", ordered=True
)
ST_RECOMMENDATIONS = StreamSpec(
    "st.recommendations", Retention.SNAPSHOT, 10_000, "StrategyRecommendations: top 5 across buckets"
)
RK_DECISIONS = StreamSpec("rk.decisions", Retention.LOG, None, "RiskDecision on every intent", ordered=True)
RK_PORTFOLIO = StreamSpec("rk.portfolio", Retention.SNAPSHOT, 10_000, "PortfolioSnapshot")
RK_STATE = StreamSpec("rk.state", Retention.SNAPSHOT, 10_000, "TradingState (running, paused, killed)")
EX_COMMANDS = StreamSpec(
    "ex.commands", Retention.LOG, None, "ExecuteBasket, CancelOrders, FlattenAll", ordered=True
)
EX_REPORTS = StreamSpec("ex.reports", Retention.LOG, None, "OrderUpdate, Fill, BasketResult", ordered=True)
EX_HEALTH = StreamSpec("ex.health", Retention.SNAPSHOT, 10_000, "BrokerHealth")
CTL_COMMANDS = StreamSpec(
    "ctl.commands", Retention.LOG, None, "operator Commands: kill switch, flatten, ...", ordered=True
)
SYS_ALERTS = StreamSpec("sys.alerts", Retention.LOG, None, "Alerts from every process")

ALL_STREAMS: tuple[StreamSpec, ...] = (
    MD_TICKS,
    MD_CHAIN,
    MD_STATUS,
    AN_VOL,
    ST_INTENTS,
    ST_RECOMMENDATIONS,
    RK_DECISIONS,
    RK_PORTFOLIO,
    RK_STATE,
    EX_COMMANDS,
    EX_REPORTS,
    EX_HEALTH,
    CTL_COMMANDS,
    SYS_ALERTS,
)
BY_NAME: dict[str, StreamSpec] = {spec.name: spec for spec in ALL_STREAMS}

DLQ_PREFIX = "dlq."
# Dead-letter streams are facts to investigate: never trimmed automatically.
DLQ_MAXLEN: int | None = None


def dlq_name(stream: str) -> str:
    """The dead-letter stream for `stream`."""
    return f"{DLQ_PREFIX}{stream}"


def spec(name: str) -> StreamSpec:
    """The spec of a known stream; a typo fails loudly rather than creating a new stream."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stream {name!r}; known: {sorted(BY_NAME)}") from None


# One consumer group per service (DESIGN §1): the group is the service name.
SERVICES: tuple[str, ...] = ("market_data", "analytics", "strategy", "risk", "execution", "dashboard_api")

SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {
    "market_data": (CTL_COMMANDS.name,),
    "analytics": (MD_CHAIN.name, MD_TICKS.name),
    "strategy": (AN_VOL.name, MD_CHAIN.name, RK_PORTFOLIO.name, RK_STATE.name),
    "risk": (
        ST_INTENTS.name,
        EX_REPORTS.name,
        EX_HEALTH.name,
        MD_STATUS.name,
        MD_CHAIN.name,
        AN_VOL.name,
        CTL_COMMANDS.name,
    ),
    "execution": (EX_COMMANDS.name, MD_CHAIN.name, MD_TICKS.name),
    "dashboard_api": (
        MD_TICKS.name,
        MD_STATUS.name,
        AN_VOL.name,
        ST_RECOMMENDATIONS.name,
        RK_DECISIONS.name,
        RK_PORTFOLIO.name,
        RK_STATE.name,
        EX_REPORTS.name,
        EX_HEALTH.name,
        SYS_ALERTS.name,
    ),
}

PUBLICATIONS: dict[str, tuple[str, ...]] = {
    "market_data": (MD_TICKS.name, MD_CHAIN.name, MD_STATUS.name, SYS_ALERTS.name),
    "analytics": (AN_VOL.name, SYS_ALERTS.name),
    "strategy": (ST_INTENTS.name, ST_RECOMMENDATIONS.name, SYS_ALERTS.name),
    "risk": (EX_COMMANDS.name, RK_DECISIONS.name, RK_PORTFOLIO.name, RK_STATE.name, SYS_ALERTS.name),
    "execution": (EX_REPORTS.name, EX_HEALTH.name, SYS_ALERTS.name),
    "dashboard_api": (CTL_COMMANDS.name, SYS_ALERTS.name),
}


def group_name(service: str) -> str:
    """The consumer group of `service` on every stream it reads."""
    if service not in SERVICES:
        raise KeyError(f"unknown service {service!r}; known: {SERVICES}")
    return service


# Services with no side effects whose replicas must each see every entry (every dashboard shows the
# whole picture): each replica reads through a group of its own instead of sharing the service's.
GROUP_PER_REPLICA: frozenset[str] = frozenset({"dashboard_api"})


def replica_group_name(service: str, instance: str) -> str:
    """The consumer group of one replica of a `GROUP_PER_REPLICA` service."""
    if service not in GROUP_PER_REPLICA:
        raise KeyError(f"{service!r} shares one group across replicas; use group_name")
    return f"{group_name(service)}.{instance}"
