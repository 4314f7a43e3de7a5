"""The decode stage's topic cache: the same answers as decode_topic, never more entries than its
capacity, and correct again after it was emptied."""

from __future__ import annotations

import pytest

from gateway import topics
from gateway.decode import Rejected, decode_topic
from gateway.pipeline.topic_cache import TopicCache

VINS = [f"WP0ZZZ99ZTS3921{n:02d}" for n in range(10)]


def test_an_accepted_topic_is_answered_as_decode_topic_answers_it() -> None:
    cache = TopicCache()
    for topic in (topics.uplink(VINS[0]), topics.will(VINS[0])):
        first = cache.decode(topic)
        assert first == decode_topic(topic)
        assert cache.decode(topic) == first  # the second time from the cache
    assert cache.decode(topics.uplink(VINS[0])) == (VINS[0], topics.Channel.UP)
    assert cache.decode(topics.will(VINS[0])) == (VINS[0], topics.Channel.WILL)


@pytest.mark.parametrize(
    "topic", ["v1/vehicles/WP0ZZZ99ZTS392124/down", "v1/vehicles/WP0ZZZ99ZTS39212I/up", "elsewhere/up"]
)
def test_a_rejected_topic_is_rejected_every_time_and_not_kept(topic: str) -> None:
    cache = TopicCache()
    for _ in range(2):
        got = cache.decode(topic)
        assert isinstance(got, Rejected)
        assert got == decode_topic(topic)  # the same reason and detail
    assert len(cache) == 0


def test_the_cache_never_holds_more_than_its_capacity() -> None:
    cache = TopicCache(capacity=4)
    for vin in VINS:
        cache.decode(topics.uplink(vin))
        assert len(cache) <= 4


def test_after_eviction_every_topic_is_still_answered_correctly() -> None:
    cache = TopicCache(capacity=3)
    for _ in range(3):  # round robin over more topics than fit: every lookup after an eviction
        for vin in VINS:
            assert cache.decode(topics.uplink(vin)) == (vin, topics.Channel.UP)
            assert cache.decode(topics.will(vin)) == (vin, topics.Channel.WILL)


def test_a_capacity_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        TopicCache(capacity=0)
