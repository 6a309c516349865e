"""The asyncio client against real `window-node serve` processes: what must arrive is computed
from what the test sent, and every wait is bounded."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Dict, List

import pytest

import window_node_client as wnc
from daemons import WAIT, Daemons, until, within

#: 2024-01-15T08:00:00Z in milliseconds.
BASE = 1_705_305_600_000

#: 1 s windows that fire as soon as event time passes their end.
WATERMARK = ["--window-size", "1s", "--allowed-lateness", "0s", "--idle-timeout", "0s"]


def events(ids: range) -> List[Dict]:
    """One event every 10 ms of event time, each with a payload naming it."""
    return [{"id": i, "timestamp": BASE + i * 10, "payload": {"n": i}} for i in ids]


def batches(ids: range, size: int) -> List[List[Dict]]:
    return [events(range(start, min(start + size, ids.stop))) for start in range(ids.start, ids.stop, size)]


async def collect(sub, windows: List[wnc.Window], want: int) -> None:
    """Reads ``sub`` into ``windows`` until they hold ``want`` events in all."""
    async for window in sub:
        windows.append(window)
        if sum(w.count for w in windows) >= want:
            return


def check_exactly_once(windows: List[wnc.Window], ids: range) -> None:
    """Every id in exactly one window, payloads with their events, seqs dense from 0."""
    seen = Counter(i for w in windows for i in w.events)
    assert set(seen) == set(ids), f"missing {sorted(set(ids) - set(seen))[:10]}"
    doubled = [i for i, n in seen.items() if n > 1]
    assert not doubled, f"events in two windows: {doubled[:10]}"
    for w in windows:
        assert w.payloads == [{"n": i} for i in w.events], w
    seqs = [w.seq for w in windows]
    assert seqs == list(range(len(windows))), seqs


def test_ingest_and_receive_every_window_exactly_once(daemons: Daemons) -> None:
    node = daemons.start(daemons.data_dir(), *WATERMARK)

    async def main() -> None:
        client = await wnc.connect(node.addr, max_in_flight=4)
        async with client:
            windows: List[wnc.Window] = []
            reader = asyncio.ensure_future(collect(client.subscribe(from_seq=0), windows, 500))
            # 25 requests pipelined, at most 4 awaiting their reply.
            results = await within(
                asyncio.gather(*(client.ingest(b) for b in batches(range(500), 20))), "ingests"
            )
            assert sum(r.accepted for r in results) == 500
            assert sum(r.duplicates + r.late for r in results) == 0
            flushed = await client.flush()
            assert flushed and all(w.reason == "flush" for w in flushed)
            await within(reader, "every window")
            check_exactly_once(windows, range(500))
            assert {w.reason for w in windows} == {"watermark", "flush"}
            stats = await client.stats()
            assert stats["accepted"] == 500
            assert stats["emitted_windows"] == len(windows)
            assert stats["config"]["window_size_ms"] == 1000

    asyncio.run(main())


def test_a_subscriber_resumes_after_a_reconnect_without_gaps_or_repeats(daemons: Daemons) -> None:
    node = daemons.start(daemons.data_dir(), *WATERMARK)

    async def main() -> None:
        async with await wnc.connect(node.addr) as client:
            for b in batches(range(300), 50):
                await client.ingest(b)
            await client.flush()
            sub = client.subscribe(from_seq=0)
            windows = [await within(sub.__anext__(), "a window") for _ in range(2)]
            assert sub.next_seq == 2
            # The connection breaks (RST): the next read resubscribes from seq 2.
            sub._drop()
            await within(collect(sub, windows, 300), "the windows after a reconnect")
            # And live windows after another break.
            sub._drop()
            for b in batches(range(300, 600), 50):
                await client.ingest(b)
            await client.flush()
            await within(collect(sub, windows, 600), "the live windows after a reconnect")
            check_exactly_once(windows, range(600))
            # A window the daemon sent again (a seq below next_seq) is not yielded again.
            assert not sub._take(windows[3])
            assert sub.next_seq == len(windows)
            await sub.aclose()

    asyncio.run(main())


def test_a_group_shares_windows_and_a_dead_members_go_to_another(daemons: Daemons) -> None:
    node = daemons.start(
        daemons.data_dir(),
        "--window-size", "1s", "--max-events", "1", "--idle-timeout", "0s", "--ack-timeout", "30s",
    )

    async def main() -> None:
        async with await wnc.connect(node.addr) as client:
            members = [client.subscribe_group("workers", max_unacked=4) for _ in range(3)]
            for m in members:
                await within(m.joined(), "a member joining")
            seen: List[List[wnc.GroupWindow]] = [[], [], []]
            acked: List[int] = []
            progress = asyncio.Event()

            async def work(i: int) -> None:
                async for window in members[i]:
                    seen[i].append(window)
                    if i < 2:  # member 2 never acknowledges
                        try:
                            assert await window.ack() == 1
                        except wnc.ClientClosedError:
                            return  # closed at the end of the test
                        acked.append(window.seq)
                    progress.set()

            workers = [asyncio.ensure_future(work(i)) for i in range(3)]

            async def total(n: int, count) -> None:
                while count() < n:
                    progress.clear()
                    await progress.wait()

            await client.ingest(events(range(12)))  # --max-events 1: 12 windows
            await within(total(12, lambda: sum(len(s) for s in seen)), "12 deliveries")
            first = Counter(w.seq for s in seen for w in s)
            assert first == Counter(range(12)), first
            assert all(w.delivery == 1 for s in seen for w in s)
            held = {w.seq for w in seen[2]}
            assert held, "member 2 got its share"
            assert len(acked) < 12

            # Member 2 dies abruptly (its socket reset) holding what it did not acknowledge.
            members[2]._kill()
            await within(total(12, lambda: len(acked)), "the others acknowledging all 12")
            again = [w for s in seen[:2] for w in s if w.delivery != 1]
            assert {w.seq for w in again} == held
            assert all(w.delivery == 2 for w in again)
            assert sorted(acked) == list(range(12))
            for w in seen[2]:  # a dead member acknowledges nothing
                with pytest.raises(wnc.ClientClosedError):
                    await w.ack()

            stats = await client.stats()
            group = stats["groups"][0]
            assert (group["group"], group["members"], group["acked"], group["pending"]) == (
                "workers", 2, 12, 0
            ), stats
            for m in members:
                await m.aclose()
            await within(asyncio.gather(*workers), "the members stopping")

    asyncio.run(main())


def test_a_group_member_whose_connection_breaks_joins_again(daemons: Daemons) -> None:
    node = daemons.start(
        daemons.data_dir(), "--window-size", "1s", "--max-events", "1", "--idle-timeout", "0s"
    )

    async def main() -> None:
        async with await wnc.connect(node.addr) as client:
            member = client.subscribe_group("solo", max_unacked=10)
            await within(member.joined(), "joining")
            await client.ingest(events(range(3)))
            held = [await within(member.__anext__(), "a window") for _ in range(3)]
            assert [(w.seq, w.delivery) for w in held] == [(0, 1), (1, 1), (2, 1)]
            member._drop()
            # The same member, joined again, gets what it held once more.
            again = [await within(member.__anext__(), "a window again") for _ in range(3)]
            assert sorted((w.seq, w.delivery) for w in again) == [(0, 2), (1, 2), (2, 2)]
            with pytest.raises(wnc.DeliveryLostError) as lost:
                await held[0].ack()
            assert lost.value.code == 11
            assert await member.ack(again) == 3
            group = (await client.stats())["groups"][0]
            assert (group["members"], group["acked"], group["pending"]) == (1, 3, 0), group

    asyncio.run(main())


def test_a_bad_event_is_a_typed_error_with_the_daemons_code(daemons: Daemons) -> None:
    node = daemons.start(daemons.data_dir(), *WATERMARK, "--max-line-bytes", "4096")

    async def main() -> None:
        async with await wnc.connect(node.addr) as client:
            # A line over --max-line-bytes is answered without in_reply_to (its msg_id was
            # never read): the error still reaches the call that sent it.
            with pytest.raises(wnc.MalformedRequestError) as long:
                await client.ingest([{"id": 0, "timestamp": BASE, "payload": "x" * 5000}])
            assert long.value.code == 12 and "--max-line-bytes" in long.value.text
            with pytest.raises(wnc.MalformedRequestError) as bad:
                await client.ingest([{"id": 1, "timestamp": BASE}, {"id": [2], "timestamp": BASE}])
            assert bad.value.code == 12
            assert isinstance(bad.value, wnc.WindowNodeError)
            assert "events[1].id" in bad.value.text
            with pytest.raises(wnc.WindowNodeError) as late_stamp:
                await client.ingest([{"id": 3, "timestamp": "2024-01-15 10:00:10Z"}])
            assert late_stamp.value.code == 12
            # Nothing of a refused batch was applied, and the client goes on.
            ok = await client.ingest([{"id": 4, "timestamp": BASE}])
            assert (ok.accepted, ok.duplicates, ok.late) == (1, 0, 0)
            with pytest.raises(wnc.WindowNotOpenError) as not_open:
                await client.close("window-0")
            assert not_open.value.code == 20
            closed = await client.close(f"window-{BASE}")
            assert closed.events == [4] and closed.reason == "close"
            assert (await client.stats())["accepted"] == 1
            # Subscriptions refused by the daemon end with its error too.
            bad_group = client.subscribe_group("has space")
            with pytest.raises(wnc.MalformedRequestError) as e:
                await within(bad_group.joined(), "the refusal")
            assert e.value.code == 12
            with pytest.raises(wnc.MalformedRequestError):
                await within(bad_group.__anext__(), "the refusal again")
            with pytest.raises(wnc.MalformedRequestError) as e:
                await within(client.subscribe(from_seq=-1).__anext__(), "the refusal")
            assert e.value.code == 12

    asyncio.run(main())


def test_error_11_sends_the_request_to_the_next_node(daemons: Daemons) -> None:
    full = daemons.start(daemons.data_dir("full"), *WATERMARK, "--max-connections", "1")
    other = daemons.start(daemons.data_dir("other"), *WATERMARK)

    async def main() -> None:
        # One connection takes the only place `full` has; it answers the next with error 11.
        _, occupant = await asyncio.open_connection(*wnc.parse_node(full.addr))
        try:
            async with await wnc.connect([full.addr, other.addr]) as client:
                ok = await within(client.ingest(events(range(5))), "an ingest")
                assert ok.accepted == 5
                assert (await client.stats())["lease_holder"] == other.addr
            async with await wnc.connect(full.addr, failover_timeout=1.0) as alone:
                with pytest.raises(wnc.UnavailableError) as e:
                    await within(alone.stats(), "error 11")
                assert e.value.code == 11
        finally:
            occupant.close()

    asyncio.run(main())


def test_three_nodes_the_holder_killed_mid_stream_nothing_lost_or_doubled(daemons: Daemons) -> None:
    shared = daemons.data_dir()
    options = [*WATERMARK, "--failover-timeout", "15s"]
    nodes = [daemons.start(shared, *options) for _ in range(3)]
    by_addr = {n.addr: n for n in nodes}

    async def main() -> None:
        async def holder() -> str:
            async with await wnc.connect(nodes[0].addr, failover_timeout=1) as c:
                name = (await c.stats())["lease_holder"]
                return name if name in by_addr else ""

        first = await until(holder, "a lease holder")
        # The client and the group member talk to the holder itself: when it dies they must
        # move to another node, and resend what had no reply. The subscriber talks to a
        # follower, which carries on through the takeover (or the subscriber moves on).
        followers = [a for a in by_addr if a != first]
        order = [first] + followers
        async with await wnc.connect(
            order, max_in_flight=4, failover_timeout=WAIT
        ) as client, await wnc.connect(followers + [first]) as watcher:
            windows: List[wnc.Window] = []
            reader = asyncio.ensure_future(collect(watcher.subscribe(from_seq=0), windows, 1200))
            # A consumer-group member on the holder too: it joins again elsewhere.
            member = client.subscribe_group("g")
            await within(member.joined(), "the member joining")
            group_got: Dict[int, wnc.GroupWindow] = {}
            group_progress = asyncio.Event()

            async def work() -> None:
                async for window in member:
                    group_got[window.seq] = window
                    group_progress.set()
                    try:
                        await window.ack()
                    except wnc.DeliveryLostError:
                        pass  # acknowledged or not: if not, the group hands it out again
                    except wnc.ClientClosedError:
                        return  # closed at the end of the test while an ack was on its way


            worker = asyncio.ensure_future(work())
            acked = 0

            async def ingest(batch: List[Dict]):
                nonlocal acked
                result = await client.ingest(batch)
                acked += 1
                return result

            async def kill_mid_stream() -> None:
                # Once 20 requests are answered and 3 or 4 more are on the wire to the holder (checked
                # at every turn of the event loop, no sleeping), SIGKILL it. Those whose reply
                # was not yet received go to the next node again.
                while not (acked >= 20 and len(client._pending) >= 3):
                    await asyncio.sleep(0)
                by_addr[first].kill()

            killer = asyncio.ensure_future(kill_mid_stream())
            results = await within(
                asyncio.gather(*(ingest(b) for b in batches(range(1200), 20))), "60 ingests"
            )
            assert killer.done()
            # The client moved on from the dead holder.
            assert client._ring.nodes[client._ring.at] != wnc.parse_node(first)
            assert sum(r.accepted for r in results) == 1200
            assert sum(r.duplicates + r.late for r in results) == 0
            await client.flush()
            await within(reader, "every window, through the takeover")
            check_exactly_once(windows, range(1200))

            async def all_got() -> None:
                while len(group_got) < len(windows):
                    group_progress.clear()
                    await group_progress.wait()

            await within(all_got(), "the group member receiving every window")
            assert sorted(group_got) == [w.seq for w in windows]
            assert all(group_got[w.seq].events == w.events for w in windows)

            async def group_done() -> bool:
                (group,) = (await client.stats())["groups"]
                return group["acked"] == len(windows) and group["pending"] == 0

            await until(group_done, "the group's acknowledgements of every window")
            assert member._generation >= 2, "the member joined again at another node"
            await member.aclose()
            await within(worker, "the member stopping")
            stats = await client.stats()
            assert stats["lease_holder"] != first and stats["epoch"] == 2, stats
            assert {w.epoch for w in windows} <= {1, 2}

    asyncio.run(main())


def test_over_partitions_subscriptions_and_groups_keep_a_seq_per_partition(
    daemons: Daemons, redis_server
) -> None:
    options = [
        "--store", redis_server.url, "--namespace", "py", "--partitions", "3",
        "--lease-ttl", "1s", "--window-size", "1s", "--max-events", "1", "--idle-timeout", "0s",
    ]
    nodes = [daemons.start_with(*options) for _ in range(2)]
    keys = ["k0", "k1", "k2", "k3", "k4", "k5"]

    def keyed(ids: range) -> List[Dict]:
        return [
            {"id": i, "timestamp": BASE + i * 1000, "key": keys[i % 6], "payload": {"n": i}}
            for i in ids
        ]

    async def main() -> None:
        async with await wnc.connect([n.addr for n in nodes]) as client:

            async def all_held() -> bool:
                parts = (await client.stats()).get("partitions") or []
                return len(parts) == 3 and all(p["lease_holder"] for p in parts)

            await until(all_held, "every partition held")
            member = client.subscribe_group("g", max_unacked=100)
            await within(member.joined(), "the member joining every partition")
            sub = client.subscribe(from_seq=0)
            windows: List[wnc.Window] = []
            await client.ingest(keyed(range(18)))
            await within(collect(sub, windows, 9), "windows")
            assert isinstance(sub.next_seq, list) and len(sub.next_seq) == 3
            sub._drop()  # resumes with one from_seq per partition
            await within(collect(sub, windows, 18), "the rest after a reconnect")
            await client.ingest(keyed(range(18, 24)))
            await within(collect(sub, windows, 24), "live windows")
            check_partitions(windows, range(24))
            got = [await within(member.__anext__(), "a group window") for _ in range(24)]
            check_partitions(got, range(24))
            assert await member.ack(got) == 24  # one ack per partition
            (group,) = (await client.stats())["groups"]
            assert (group["acked"], group["pending"]) == (24, 0), group

    asyncio.run(main())


def check_partitions(windows: List[wnc.Window], ids: range) -> None:
    """Every id once; each partition's seqs dense from 0, in order."""
    assert sorted(i for w in windows for i in w.events) == list(ids)
    by_partition: Dict[int, List[int]] = {}
    for w in windows:
        assert w.partition is not None, w
        by_partition.setdefault(w.partition, []).append(w.seq)
    for seqs in by_partition.values():
        assert seqs == list(range(len(seqs))), by_partition
