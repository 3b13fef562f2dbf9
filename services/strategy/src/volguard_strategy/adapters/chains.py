"""The ChainSnapshots a VolSnapshot names, from md.chain.

md.chain is read (conflated per expiry) into a small cache keyed by event id. Streams are read by
separate tasks, so a VolSnapshot can be handled before its chains were read, and conflation can skip
the very chain it names: then the missing ones are looked up in the md.chain stream itself, newest
first, over a bounded window. A chain found in neither (trimmed away) is reported missing, never
replaced by another one: the domain then waits on that expiry and says why.
"""

from __future__ import annotations

from collections import deque
from datetime import date

import structlog
from redis.asyncio import Redis

from volguard_common import events, streams
from volguard_common.bus import EVENT_FIELD, BusConfig
from volguard_common.events import ChainSnapshot
from volguard_common.events.vol import VolSnapshot
from volguard_strategy.ports import ChainSet

log = structlog.get_logger("volguard.strategy.chains")

# Chains kept per expiry: several analytics cycles, so a VolSnapshot a little behind md.chain still
# finds its own set in memory.
KEPT_PER_EXPIRY = 16
# md.chain entries read back (newest first) when a named chain is not in memory: one entry per expiry
# per cycle, so this spans tens of cycles.
LOOK_BACK_ENTRIES = 512


class ChainBook:
    def __init__(self, redis: Redis, config: BusConfig) -> None:
        self._redis = redis
        self._key = config.key(streams.MD_CHAIN.name)
        self._by_id: dict[str, ChainSnapshot] = {}
        self._order: dict[date, deque[str]] = {}
        self.looked_back = 0

    def remember(self, chain: ChainSnapshot) -> None:
        if chain.event_id in self._by_id:
            return
        kept = self._order.setdefault(chain.expiry, deque())
        kept.append(chain.event_id)
        self._by_id[chain.event_id] = chain
        while len(kept) > KEPT_PER_EXPIRY:
            self._by_id.pop(kept.popleft(), None)

    async def chains_for(self, snapshot: VolSnapshot) -> ChainSet:
        wanted = list(dict.fromkeys(snapshot.chain_event_ids))
        found = {eid: self._by_id[eid] for eid in wanted if eid in self._by_id}
        absent = [eid for eid in wanted if eid not in found]
        if absent:
            self.looked_back += 1
            found.update(await self._look_back(absent))
        missing = tuple(eid for eid in wanted if eid not in found)
        if missing:
            log.warning(
                "chain snapshots named by a VolSnapshot are gone from md.chain",
                vol_event_id=snapshot.event_id,
                missing=list(missing),
            )
        chains: dict[date, ChainSnapshot] = {}
        for eid in wanted:
            chain = found.get(eid)
            if chain is not None:
                chains[chain.expiry] = chain
        return ChainSet(chains, missing)

    async def _look_back(self, event_ids: list[str]) -> dict[str, ChainSnapshot]:
        entries = await self._redis.xrevrange(self._key, count=LOOK_BACK_ENTRIES)
        needles = {eid: eid.encode() for eid in event_ids}
        found: dict[str, ChainSnapshot] = {}
        for _, fields in entries:
            raw = fields.get(EVENT_FIELD)
            if raw is None:
                continue
            # Only a payload that contains a wanted id is parsed (parsing every chain would be most of
            # the cost of a look-back).
            hits = [eid for eid, needle in needles.items() if eid not in found and needle in raw]
            if not hits:
                continue
            event = events.parse_event(raw)
            if isinstance(event, ChainSnapshot) and event.event_id in hits:
                found[event.event_id] = event
                self.remember(event)
            if len(found) == len(event_ids):
                break
        return found
