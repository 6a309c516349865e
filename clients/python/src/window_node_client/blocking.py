"""A small blocking wrapper: the asyncio client runs on an event loop in a background thread,
and each method waits for its result. For scripts and code without an event loop::

    from window_node_client.blocking import connect

    with connect(["127.0.0.1:7070"]) as client:
        client.ingest([{"id": 1, "timestamp": 1705312810000}])
        client.flush()
        for window in client.subscribe(from_seq=0):
            print(window.seq, window.events)
            break
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Awaitable, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, TypeVar, Union

from . import client as _async
from .client import FromSeq, Node
from .types import GroupWindow, IngestResult, Window

T = TypeVar("T")


async def _made(make: Callable[[], T]) -> T:
    """``make()``, called on the event loop's thread (what it makes belongs to that loop)."""
    return make()


class _Loop:
    """An event loop on a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="window-node-client", daemon=True
        )
        self.thread.start()

    def run(self, coro: Awaitable[T], timeout: Optional[float] = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no result within {timeout}s") from None

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


class BlockingClient:
    """The blocking face of :class:`window_node_client.Client`; make one with :func:`connect`.

    ``close(window_id)`` is the daemon's close request; :meth:`shutdown` (or leaving a ``with``
    block) closes the client itself.
    """

    def __init__(self, nodes: Union[Node, Iterable[Node]], **options: Any):
        self._loop = _Loop()
        try:
            self._client: _async.Client = self._loop.run(_async.connect(nodes, **options))
        except BaseException:
            self._loop.stop()
            raise

    def ingest(self, events: Sequence[Mapping[str, Any]]) -> IngestResult:
        return self._loop.run(self._client.ingest(events))

    def close(
        self, window_id: str, *, window_size_ms: Optional[int] = None, key: Optional[str] = None
    ) -> Window:
        return self._loop.run(
            self._client.close(window_id, window_size_ms=window_size_ms, key=key)
        )

    def flush(self, until: Union[str, int, None] = None) -> List[Window]:
        return self._loop.run(self._client.flush(until))

    def stats(self) -> Dict[str, Any]:
        return self._loop.run(self._client.stats())

    def subscribe(self, from_seq: FromSeq = None) -> "BlockingSubscription":
        sub = self._loop.run(_made(lambda: self._client.subscribe(from_seq)))
        return BlockingSubscription(self._loop, sub)

    def subscribe_group(
        self, name: str, max_unacked: int = 1000, *, from_seq: Optional[int] = None
    ) -> "BlockingSubscription":
        """Joins the group and returns once the daemon has taken the member (a group starts at
        the next window fired, so windows fired after this call reach the group)."""
        sub = self._loop.run(
            _made(lambda: self._client.subscribe_group(name, max_unacked, from_seq=from_seq))
        )
        self._loop.run(sub.joined())
        return BlockingSubscription(self._loop, sub)

    def shutdown(self) -> None:
        """Closes the client and its subscriptions, and stops its thread (once)."""
        if not self._loop.thread.is_alive():
            return
        try:
            self._loop.run(self._client.aclose(), 10)
        finally:
            self._loop.stop()

    def __enter__(self) -> "BlockingClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


class BlockingSubscription:
    """An iterator of windows (group windows: ``window.ack()`` blocks until durable).
    :meth:`get` waits at most ``timeout`` seconds (``TimeoutError``)."""

    def __init__(self, loop: _Loop, sub: Any):
        self._loop = loop
        self._sub = sub

    def __iter__(self) -> Iterator[Window]:
        return self

    def __next__(self) -> Window:
        try:
            return self.get()
        except StopAsyncIteration:
            raise StopIteration from None

    def get(self, timeout: Optional[float] = None) -> Window:
        window = self._loop.run(self._sub.__anext__(), timeout)
        if isinstance(window, GroupWindow):
            acker = window._acker
            assert acker is not None
            window._acker = lambda w: self._loop.run(acker(w))  # type: ignore[assignment]
        return window

    def ack(self, windows: Iterable[GroupWindow]) -> int:
        """Acknowledges several group windows at once."""
        return self._loop.run(self._sub.ack(list(windows)))

    @property
    def next_seq(self) -> FromSeq:
        return self._sub.next_seq

    def close(self) -> None:
        self._loop.run(self._sub.aclose(), 10)


def connect(nodes: Union[Node, Iterable[Node]], **options: Any) -> BlockingClient:
    """Connects as :func:`window_node_client.connect` does, and returns a
    :class:`BlockingClient`."""
    return BlockingClient(nodes, **options)
