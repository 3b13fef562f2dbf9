"""The paper account in Postgres (`execution.paper_*`, migration 0002): the `PaperStore` of the service.

The paper account is an effect of the single-active execution service like its orders and fills: every
write checks the lease's fencing token in its own transaction (`Fence.check`), so a replica that lost the
lease cannot move paper positions behind the new holder's back (`StaleLeaseError`, nothing written).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from volguard_common.events._base import Side
from volguard_common.events.orders import OrderStatus
from volguard_common.lease import Fence
from volguard_execution.adapters.paper_broker import PaperAccount, died_with_session
from volguard_execution.domain.orders import BrokerReport, Trade
from volguard_execution.ports import BrokerOrder, BrokerTrade


class PostgresPaperStore:
    def __init__(self, pool: asyncpg.Pool, fence: Fence | None) -> None:
        self._pool = pool
        # None only where no lease exists (a store used outside a single-active service, in tests).
        self._fence = fence

    async def _fenced(self, conn: Any) -> None:
        if self._fence is not None:
            await self._fence.check(conn)

    async def open_session(self, ts_event: datetime) -> PaperAccount:
        async with self._pool.acquire() as conn, conn.transaction():
            await self._fenced(conn)
            session = await conn.fetchval(
                "select coalesce(max(session), -1) + 1 from execution.paper_sessions"
            )
            await conn.execute(
                "insert into execution.paper_sessions (session, opened_at) values ($1, $2)", session, ts_event
            )
            orders = [_order(row) for row in await conn.fetch("select * from execution.paper_orders")]
            ended = [died_with_session(order, ts_event) for order in orders]
            for before, after in zip(orders, ended, strict=True):
                if after is not before:
                    await _upsert(conn, after)
            trades = [
                _trade(row)
                for row in await conn.fetch("select * from execution.paper_trades order by ts_event")
            ]
        return PaperAccount(ended, trades, int(session))

    async def save_order(self, order: BrokerOrder) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await self._fenced(conn)
            await _upsert(conn, order)

    async def save_trade(self, trade: BrokerTrade) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await self._fenced(conn)
            await conn.execute(
                """insert into execution.paper_trades (trade_id, broker_order_id, client_order_id,
                       instrument_key, side, quantity, price, first_fill_of_order, ts_event)
                   values ($1, $2, $3, $4, $5, $6, $7, $8, $9) on conflict (trade_id) do nothing""",
                trade.trade.trade_id,
                trade.broker_order_id,
                trade.client_order_id,
                trade.instrument_key,
                trade.side.value,
                trade.trade.quantity,
                trade.trade.price,
                trade.first_fill_of_order,
                trade.trade.ts_event,
            )


async def _upsert(conn: Any, order: BrokerOrder) -> None:
    await conn.execute(
        """insert into execution.paper_orders (broker_order_id, client_order_id, instrument_key, side,
               quantity, limit_price, status, filled_qty, avg_price, message, ts_event)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
           on conflict (broker_order_id) do update set limit_price = excluded.limit_price,
               status = excluded.status, filled_qty = excluded.filled_qty, avg_price = excluded.avg_price,
               message = excluded.message, ts_event = excluded.ts_event""",
        order.broker_order_id,
        order.client_order_id,
        order.instrument_key,
        order.side.value,
        order.quantity,
        order.limit_price,
        order.report.status.value,
        order.report.filled_qty,
        order.report.avg_price,
        order.report.message,
        order.ts_event,
    )


def _order(row: asyncpg.Record) -> BrokerOrder:
    avg: Decimal | None = row["avg_price"]
    return BrokerOrder(
        row["broker_order_id"],
        row["client_order_id"],
        row["instrument_key"],
        Side(row["side"]),
        row["quantity"],
        row["limit_price"],
        BrokerReport(
            OrderStatus(row["status"]), row["filled_qty"], avg, row["broker_order_id"], row["message"]
        ),
        row["ts_event"],
    )


def _trade(row: asyncpg.Record) -> BrokerTrade:
    return BrokerTrade(
        row["broker_order_id"],
        row["client_order_id"],
        row["instrument_key"],
        Side(row["side"]),
        Trade(row["trade_id"], row["quantity"], row["price"], row["ts_event"]),
        row["first_fill_of_order"],
    )
