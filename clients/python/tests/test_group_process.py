"""A consumer-group member in another process, SIGKILLed while it holds unacknowledged windows
(issue 16's wording): what it held reaches the members that live, with delivery 2."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import List

import window_node_client as wnc
from daemons import WAIT, Daemons, until, within

BASE = 1_705_305_600_000
SRC = Path(__file__).resolve().parents[1] / "src"

#: The member process: joins with the blocking client, prints each seq, acknowledges nothing.
CHILD = """
import sys
from window_node_client import blocking
client = blocking.connect([sys.argv[1]])
sub = client.subscribe_group("g", max_unacked=4)
print("joined", flush=True)
for window in sub:
    print(window.seq, flush=True)
"""


class Child:
    """The member process, its stdout lines gathered by a thread."""

    def __init__(self, addr: str):
        env = dict(os.environ, PYTHONPATH=str(SRC))
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, addr],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env,
        )
        self.lines: List[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self.changed:
                self.lines.append(raw.decode().strip())
                self.changed.notify_all()

    def wait_for(self, count: int) -> None:
        """Waits (at most WAIT) until it printed ``count`` lines."""
        deadline = time.monotonic() + WAIT
        with self.changed:
            while len(self.lines) < count:
                left = deadline - time.monotonic()
                assert left > 0 and self.process.poll() is None, f"member process: {self.lines}"
                self.changed.wait(min(left, 0.5))

    def held(self) -> List[int]:
        with self.changed:
            return [int(line) for line in self.lines[1:]]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(WAIT)


def test_a_member_process_sigkilled_holding_windows_gives_them_to_the_others(
    daemons: Daemons,
) -> None:
    node = daemons.start(
        daemons.data_dir(),
        "--window-size", "1s", "--max-events", "1", "--idle-timeout", "0s", "--ack-timeout", "30s",
    )
    child = Child(node.addr)
    try:
        child.wait_for(1)  # joined

        async def main() -> None:
            async with await wnc.connect(node.addr) as client:
                members = [client.subscribe_group("g", max_unacked=4) for _ in range(2)]
                for m in members:
                    await within(m.joined(), "a member joining")
                seen: List[wnc.GroupWindow] = []
                progress = asyncio.Event()

                async def work(member) -> None:
                    async for window in member:
                        try:
                            await window.ack()
                        except wnc.ClientClosedError:
                            return  # closed at the end of the test
                        seen.append(window)
                        progress.set()

                workers = [asyncio.ensure_future(work(m)) for m in members]

                async def acked(count) -> None:
                    while count() > 0:
                        progress.clear()
                        await progress.wait()

                await client.ingest(
                    [{"id": i, "timestamp": BASE + i * 1000} for i in range(12)]
                )
                # The first deliveries: the others' acknowledged, and the child's share printed.
                async def first_round() -> bool:
                    return len(seen) + len(child.held()) >= 12

                await until(first_round, "12 deliveries")
                held = child.held()
                assert held, "the member process got its share"
                assert Counter([w.seq for w in seen] + held) == Counter(range(12))
                child.kill()
                await within(acked(lambda: 12 - len(seen)), "the held windows again")
                again = [w for w in seen if w.delivery != 1]
                assert sorted(w.seq for w in again) == sorted(held)
                assert all(w.delivery == 2 for w in again)
                for m in members:
                    await m.aclose()
                await within(asyncio.gather(*workers), "the members stopping")

        asyncio.run(main())
    finally:
        child.kill()
