"""The blocking wrapper: the same operations without an event loop in the caller."""

from __future__ import annotations

import pytest

import window_node_client as wnc
from window_node_client import blocking
from daemons import WAIT, Daemons

BASE = 1_705_305_600_000


def test_the_blocking_wrapper(daemons: Daemons) -> None:
    node = daemons.start(
        daemons.data_dir(), "--window-size", "1s", "--max-events", "2", "--idle-timeout", "0s"
    )
    with blocking.connect([node.addr]) as client:
        group = client.subscribe_group("g", max_unacked=10)
        result = client.ingest(
            [{"id": i, "timestamp": BASE + i * 100, "payload": f"p{i}"} for i in range(4)]
        )
        assert (result.accepted, result.duplicates, result.late) == (4, 0, 0)
        assert client.ingest([{"id": 0, "timestamp": BASE}]).duplicates == 1
        sub = client.subscribe(from_seq=0)
        windows = [sub.get(WAIT) for _ in range(2)]  # --max-events 2: two windows fired
        assert [w.events for w in windows] == [[0, 1], [2, 3]]
        assert [w.payloads for w in windows] == [["p0", "p1"], ["p2", "p3"]]
        assert sub.next_seq == 2
        first = group.get(WAIT)
        assert first.delivery == 1 and first.seq in (0, 1)
        assert first.ack() == 1  # blocks until durable
        second = group.get(WAIT)
        assert group.ack([second]) == 1
        with pytest.raises(TimeoutError):
            sub.get(0.2)
        client.ingest([{"id": 9, "timestamp": BASE + 900}])
        (flushed,) = client.flush()
        assert flushed.events == [9] and flushed.seq == 2
        assert next(iter(sub)).seq == 2
        with pytest.raises(wnc.WindowNotOpenError) as e:
            client.close(f"window-{BASE}")
        assert e.value.code == 20
        stats = client.stats()
        assert stats["groups"][0]["acked"] == 2, stats
        sub.close()
        assert list(sub) == []
    client.shutdown()  # a second time does nothing
