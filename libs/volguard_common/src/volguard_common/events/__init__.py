"""The v1 event catalogue (DESIGN §2): every message on the bus, its envelope and its stream.

    from volguard_common.events import ChainSnapshot, Event, parse_event

    payload = snapshot.model_dump_json()   # what the bus writes
    event = parse_event(payload)           # what the bus reads: the concrete type, validated

`Event` is the discriminated union of all event types (discriminator `type`, the class name).
`STREAM_OF` says which stream each type travels on, `EVENTS_ON` the reverse.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, TypeAdapter

from volguard_common.events._base import (
    IST,
    UUID7_PATTERN,
    Bucket,
    EventBase,
    Greeks,
    IstDatetime,
    OptionType,
    Side,
    event_id_time,
    new_event_id,
)
from volguard_common.events.chain import ALL_QUOTE_FLAGS, CHAIN_COLUMNS, ChainColumns, QuoteFlag
from volguard_common.events.control import (
    TRADING_STATE_RANK,
    ActiveCause,
    Alert,
    BrokerHealth,
    BucketState,
    Command,
    CommandKind,
    OpenTrade,
    PortfolioSnapshot,
    Position,
    RateLimitHeadroom,
    Severity,
    TradingCause,
    TradingState,
    TradingStateKind,
)
from volguard_common.events.market import (
    CROSSED,
    MISSING,
    STALE_LTP,
    WIDE_SPREAD,
    ZERO_BID,
    ChainArrays,
    ChainSnapshot,
    FeedState,
    FeedStatus,
    InstrumentKind,
    MarketMode,
    Tick,
)
from volguard_common.events.orders import (
    CLIENT_ORDER_ID_LENGTH,
    MAX_LEGS,
    BasketLeg,
    BasketResult,
    BasketStatus,
    CancelOrders,
    ExecuteBasket,
    ExitReason,
    Fill,
    FlattenAll,
    IntentKind,
    LegResult,
    OrderLeg,
    OrderStatus,
    OrderUpdate,
    RiskCheck,
    RiskDecision,
    Structure,
    TradeIntent,
    Urgency,
    client_order_id,
)
from volguard_common.events.vol import (
    ALL_IV_FLAGS,
    EventRisk,
    EventSeverity,
    ExpectedMove,
    ExpiryVol,
    ForwardSource,
    GarchForecast,
    IvFlag,
    PremiumSignal,
    Quality,
    RealisedVol,
    Regime,
    RegimeView,
    SabrFit,
    SkewSignal,
    SkewView,
    StrikeSurface,
    TermPoint,
    TermSignal,
    TermStructure,
    TrendDirection,
    VolPercentiles,
    VolPremium,
    VolSnapshot,
)

Event = Annotated[
    Tick
    | ChainSnapshot
    | FeedStatus
    | VolSnapshot
    | TradeIntent
    | RiskDecision
    | ExecuteBasket
    | CancelOrders
    | FlattenAll
    | OrderUpdate
    | Fill
    | BasketResult
    | PortfolioSnapshot
    | TradingState
    | Command
    | Alert
    | BrokerHealth,
    Field(discriminator="type"),
]

# The title names errors "... for Event" rather than listing all seventeen validators.
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event, config=ConfigDict(title="Event"))

ALL_EVENT_TYPES: tuple[type[EventBase], ...] = (
    Tick,
    ChainSnapshot,
    FeedStatus,
    VolSnapshot,
    TradeIntent,
    RiskDecision,
    ExecuteBasket,
    CancelOrders,
    FlattenAll,
    OrderUpdate,
    Fill,
    BasketResult,
    PortfolioSnapshot,
    TradingState,
    Command,
    Alert,
    BrokerHealth,
)
# Discriminator value (the class name) → class.
EVENT_TYPES: dict[str, type[EventBase]] = {cls.__name__: cls for cls in ALL_EVENT_TYPES}
STREAM_OF: dict[type[EventBase], str] = {cls: cls.STREAM for cls in ALL_EVENT_TYPES}
EVENTS_ON: dict[str, tuple[type[EventBase], ...]] = {
    stream: tuple(cls for cls in ALL_EVENT_TYPES if stream == cls.STREAM)
    for stream in sorted(set(STREAM_OF.values()))
}
# Schema versions this code can read, per discriminator value.
SUPPORTED_SCHEMA_VERSIONS: dict[str, frozenset[int]] = {
    name: cls.SUPPORTED_SCHEMA_VERSIONS for name, cls in EVENT_TYPES.items()
}


def parse_event(data: bytes | str) -> Event:
    """Parse one JSON payload into its concrete event type; raises pydantic.ValidationError."""
    return EVENT_ADAPTER.validate_json(data)


__all__ = [
    "ALL_EVENT_TYPES",
    "ALL_IV_FLAGS",
    "ALL_QUOTE_FLAGS",
    "CHAIN_COLUMNS",
    "CLIENT_ORDER_ID_LENGTH",
    "CROSSED",
    "EVENTS_ON",
    "EVENT_ADAPTER",
    "EVENT_TYPES",
    "IST",
    "MAX_LEGS",
    "MISSING",
    "STALE_LTP",
    "STREAM_OF",
    "SUPPORTED_SCHEMA_VERSIONS",
    "TRADING_STATE_RANK",
    "UUID7_PATTERN",
    "WIDE_SPREAD",
    "ZERO_BID",
    "ActiveCause",
    "Alert",
    "BasketLeg",
    "BasketResult",
    "BasketStatus",
    "BrokerHealth",
    "Bucket",
    "BucketState",
    "CancelOrders",
    "ChainArrays",
    "ChainColumns",
    "ChainSnapshot",
    "Command",
    "CommandKind",
    "Event",
    "EventBase",
    "EventRisk",
    "EventSeverity",
    "ExecuteBasket",
    "ExitReason",
    "ExpectedMove",
    "ExpiryVol",
    "FeedState",
    "FeedStatus",
    "Fill",
    "FlattenAll",
    "ForwardSource",
    "GarchForecast",
    "Greeks",
    "InstrumentKind",
    "IntentKind",
    "IstDatetime",
    "IvFlag",
    "LegResult",
    "MarketMode",
    "OpenTrade",
    "OptionType",
    "OrderLeg",
    "OrderStatus",
    "OrderUpdate",
    "PortfolioSnapshot",
    "Position",
    "PremiumSignal",
    "Quality",
    "QuoteFlag",
    "RateLimitHeadroom",
    "RealisedVol",
    "Regime",
    "RegimeView",
    "RiskCheck",
    "RiskDecision",
    "SabrFit",
    "Severity",
    "Side",
    "SkewSignal",
    "SkewView",
    "StrikeSurface",
    "Structure",
    "TermPoint",
    "TermSignal",
    "TermStructure",
    "Tick",
    "TradeIntent",
    "TradingCause",
    "TradingState",
    "TradingStateKind",
    "TrendDirection",
    "Urgency",
    "VolPercentiles",
    "VolPremium",
    "VolSnapshot",
    "client_order_id",
    "event_id_time",
    "new_event_id",
    "parse_event",
]
