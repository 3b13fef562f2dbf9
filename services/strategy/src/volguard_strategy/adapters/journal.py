"""The decision journal in the `strategy` schema, and the state a replica restores from it.

`record` writes one evaluation in the caller's transaction (the outbox transaction of the VolSnapshot
it answers): the evaluation, one decision row per bucket with its reasons, every intent published,
and what the evaluation added to the strategist's state. `restore` rebuilds that state: the last
entry per bucket (cooldowns), the exits and hedges already proposed per trade and rule, and the regime
of each entry and trade.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from volguard_common import clock
from volguard_common.events import Bucket, IntentKind
from volguard_common.events.vol import Regime, VolSnapshot
from volguard_strategy.domain.strategist import Evaluation
from volguard_strategy.ports import StateChange, StrategistState


class PostgresJournal:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(
        self,
        conn: Any,
        snapshot: VolSnapshot,
        evaluation: Evaluation,
        missing: tuple[str, ...],
        change: StateChange,
        fencing_token: int | None,
    ) -> None:
        vol_id = snapshot.event_id
        await conn.execute(
            "insert into strategy.evaluations (vol_event_id, ts_event, correlation_id, quality, regime, "
            "spot, vix, premium_signal, term_signal, atm_iv_percentile, event_score, chains_missing, "
            "intents, recommendations, fencing_token) "
            "values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            vol_id,
            snapshot.ts_event,
            snapshot.correlation_id,
            snapshot.quality.value,
            snapshot.regime.regime.value,
            snapshot.spot,
            snapshot.vix,
            snapshot.premium.signal.value,
            None if snapshot.term.signal is None else snapshot.term.signal.value,
            snapshot.percentiles.atm_iv_percentile,
            snapshot.event_risk.score,
            list(missing),
            len(evaluation.intents),
            len(evaluation.recommendations.recommendations),
            fencing_token,
        )
        await conn.executemany(
            "insert into strategy.decisions (vol_event_id, bucket, ts_event, correlation_id, structure, "
            "rule, reasons, intent_id) values ($1, $2, $3, $4, $5, $6, $7, $8)",
            [
                (
                    vol_id,
                    d.bucket.value,
                    snapshot.ts_event,
                    snapshot.correlation_id,
                    d.structure.value,
                    d.rule,
                    list(d.reasons),
                    d.intent_id,
                )
                for d in evaluation.decisions
            ],
        )
        await conn.executemany(
            "insert into strategy.intents (intent_id, event_id, vol_event_id, ts_event, correlation_id, "
            "kind, bucket, structure, trade_id, regime, event, fencing_token) "
            "values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            [
                (
                    i.intent_id,
                    i.event_id,
                    vol_id,
                    i.ts_event,
                    i.correlation_id,
                    i.kind.value,
                    i.bucket.value,
                    i.structure.value,
                    i.trade_id,
                    None
                    if i.intent_id not in change.regime_of_intent
                    else change.regime_of_intent[i.intent_id].value,
                    i.model_dump_json(),
                    fencing_token,
                )
                for i in evaluation.intents
            ],
        )
        await conn.executemany(
            "insert into strategy.proposed (trade_id, rule, vol_event_id, ts_event) values ($1, $2, $3, $4)",
            [(trade_id, rule, vol_id, snapshot.ts_event) for trade_id, rule in sorted(change.proposed)],
        )
        await conn.executemany(
            "insert into strategy.trade_regimes (trade_id, regime, vol_event_id) values ($1, $2, $3)",
            [(trade_id, regime.value, vol_id) for trade_id, regime in sorted(change.regime_of_trade.items())],
        )

    async def restore(self) -> StrategistState:
        async with self._pool.acquire() as conn:
            entries = await conn.fetch(
                "select bucket, max(ts_event) as last from strategy.intents where kind = $1 group by bucket",
                IntentKind.ENTRY.value,
            )
            regimes = await conn.fetch(
                "select intent_id, regime from strategy.intents where kind = $1 and regime is not null",
                IntentKind.ENTRY.value,
            )
            proposed = await conn.fetch("select trade_id, rule from strategy.proposed")
            trades = await conn.fetch("select trade_id, regime from strategy.trade_regimes")
        return StrategistState(
            last_entry={Bucket(r["bucket"]): clock.to_ist(r["last"]) for r in entries},
            proposed=frozenset((r["trade_id"], r["rule"]) for r in proposed),
            regime_of_intent={r["intent_id"]: Regime(r["regime"]) for r in regimes},
            regime_of_trade={r["trade_id"]: Regime(r["regime"]) for r in trades},
        )
