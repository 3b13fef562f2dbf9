"""The chains a VolSnapshot names, found in memory or read back from md.chain, never substituted."""

from __future__ import annotations

from redis.asyncio import Redis

from tests.unit.strategy.market import market
from volguard_common import events
from volguard_common.bus import BusConfig, Publisher
from volguard_common.settings import Settings
from volguard_strategy.adapters.chains import ChainBook


async def test_chains_not_read_yet_are_read_back_from_the_stream_and_a_missing_one_is_named(
    redis: Redis, settings: Settings
) -> None:
    snapshot, chains = market()
    config = BusConfig.from_settings(settings)
    publisher = Publisher(redis, config, service="market_data", source="market_data/test")
    expiries = sorted(chains)
    # The last expiry's chain never reached md.chain (trimmed, say): only the others are there.
    for expiry in expiries[:-1]:
        await publisher.publish(chains[expiry])
    book = ChainBook(redis, config)

    found = await book.chains_for(snapshot)

    assert book.looked_back == 1
    assert found.chains == {e: chains[e] for e in expiries[:-1]}
    assert found.missing == (chains[expiries[-1]].event_id,)
    # What was read back is remembered: the next snapshot of the same set needs no look-back for it.
    book.remember(chains[expiries[-1]])
    again = await book.chains_for(snapshot.model_copy(update={"event_id": events.new_event_id()}))
    assert book.looked_back == 1
    assert again.chains == chains
    assert again.missing == ()
