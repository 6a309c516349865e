"""The asyncio client: one request connection shared by every call, one connection per
subscription, each moving to the next node when its node fails.

Safety of resending rests on the daemon's request ids (docs/protocol.md, "Request ids"):
every ``ingest``, ``close`` and ``flush`` carries a ``request_id`` unique to this client, so a
request sent again after a lost connection or an error 11 is answered from the daemon's record
and takes effect once. ``stats`` changes nothing and is simply sent again.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import (
    Any,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import _json
from .errors import (
    UNAVAILABLE,
    ClientClosedError,
    DeliveryLostError,
    UnavailableError,
    WindowNodeError,
    error_from_reply,
)
from .types import GroupWindow, IngestResult, Window

Node = Union[str, Tuple[str, int]]
FromSeq = Union[int, List[int], None]

#: The longest line the client reads (a window with many payloads can be large).
LINE_LIMIT = 1 << 28


def parse_node(node: Node) -> Tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"`` or ``(host, port)`` as ``(host, port)``."""
    if isinstance(node, tuple):
        return str(node[0]), int(node[1])
    host, sep, port = str(node).rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"a node is 'host:port', got {node!r}")
    return host.strip("[]"), int(port)


def _encode_tail(body: Mapping[str, Any]) -> bytes:
    """The request's JSON without its opening brace, so that each send can put a fresh
    ``msg_id`` in front without encoding the events again."""
    return _json.dumps(body)[1:]


def _whole(body: Mapping[str, Any]) -> bytes:
    """The request as one line."""
    return b"{" + _encode_tail(body) + b"\n"


def _line(msg_id: int, tail: bytes) -> bytes:
    if tail == b"}":
        return b'{"msg_id":%d}\n' % msg_id
    return b'{"msg_id":%d,' % msg_id + tail + b"\n"


class _Ring:
    """The nodes, and which one to try next: a failed node's successor."""

    def __init__(self, nodes: Iterable[Node]):
        self.nodes = [parse_node(n) for n in nodes]
        if not self.nodes:
            raise ValueError("connect needs at least one node")
        self.at = 0

    def order(self) -> List[Tuple[int, Tuple[str, int]]]:
        n = len(self.nodes)
        return [((self.at + i) % n, self.nodes[(self.at + i) % n]) for i in range(n)]

    def describe(self) -> str:
        return ", ".join(f"{h}:{p}" for h, p in self.nodes)


async def _open(
    ring: _Ring, deadline: float, connect_timeout: float, after_failure: bool
) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connects to the first node that answers, starting after the failed one when
    ``after_failure``; goes round the ring with a growing pause until ``deadline``."""
    loop = asyncio.get_running_loop()
    if after_failure:
        ring.at = (ring.at + 1) % len(ring.nodes)
    pause = 0.02
    last: Optional[BaseException] = None
    while True:
        for index, (host, port) in ring.order():
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port, limit=LINE_LIMIT), connect_timeout
                )
            except (OSError, asyncio.TimeoutError) as e:
                last = e
                continue
            ring.at = index
            return reader, writer
        if loop.time() + pause > deadline:
            raise UnavailableError(
                UNAVAILABLE, f"no node of {ring.describe()} accepted a connection ({last})"
            )
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)


def _abort(writer: Optional[asyncio.StreamWriter]) -> None:
    if writer is not None:
        transport = writer.transport
        if not transport.is_closing():
            transport.abort()


class _Pending:
    __slots__ = ("tail", "future")

    def __init__(self, tail: bytes, future: "asyncio.Future[Dict[str, Any]]"):
        self.tail = tail
        self.future = future


class _Conn:
    """One request connection: the requests sent on it that await their reply, by msg_id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.waiting: Dict[int, _Pending] = {}
        self.closed = False
        self.drain_lock = asyncio.Lock()
        self.task: Optional["asyncio.Task[None]"] = None


class Client:
    """A connection to a cluster of ``window-node serve`` processes; make one with
    :func:`connect`.

    Requests are pipelined on one connection, at most ``max_in_flight`` awaiting their reply
    (further calls wait: backpressure). When the connection is lost, or a node answers error 11,
    every request still awaiting its reply is sent again, in the order first sent, to the next
    node; after ``failover_timeout`` seconds without any node serving them they fail with
    :class:`UnavailableError`. Other error replies raise the typed :class:`WindowNodeError`
    with the daemon's ``code``.
    """

    def __init__(
        self,
        nodes: Iterable[Node],
        *,
        max_in_flight: int = 16,
        failover_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        client_name: Optional[str] = None,
    ):
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._ring = _Ring(nodes)
        self.failover_timeout = failover_timeout
        self.connect_timeout = connect_timeout
        self._slots = asyncio.Semaphore(max_in_flight)
        # Requests awaiting a reply, in the order they were first sent: a resend keeps it, so
        # events are not made late by their successors overtaking them.
        self._pending: Dict[int, _Pending] = {}
        self._calls = itertools.count()
        self._msg_ids = itertools.count(1)
        self._prefix = client_name or f"py-{uuid.uuid4().hex}"
        self._request_ids = itertools.count(1)
        self._conn: Optional[_Conn] = None
        self._reconnecting: Optional["asyncio.Task[None]"] = None
        # When the nodes stopped serving us (None while all is well): the failover deadline.
        self._trouble_since: Optional[float] = None
        self._subscriptions: List[Any] = []
        self._closed = False

    # -- the operations -------------------------------------------------------------------

    def next_request_id(self) -> str:
        """A request id unique to this client (its prefix and a counter)."""
        return f"{self._prefix}-{next(self._request_ids)}"

    async def ingest(self, events: Sequence[Mapping[str, Any]]) -> IngestResult:
        """Sends ``events`` (dicts with ``id``, ``timestamp`` and optionally ``key``, ``value``,
        ``payload``) and returns once they are durable. Takes effect once, whatever fails."""
        events = list(events)
        if not events:
            return IngestResult(0, 0, 0)
        reply = await self._call(
            {"type": "ingest", "request_id": self.next_request_id(), "events": events}
        )
        return IngestResult(
            int(reply.get("accepted", 0)), int(reply.get("duplicates", 0)), int(reply.get("late", 0))
        )

    async def close(
        self, window_id: str, *, window_size_ms: Optional[int] = None, key: Optional[str] = None
    ) -> Window:
        """Closes one open window and returns it (``WindowNotOpenError`` if it is not open).

        This is the daemon's ``close`` request; the client itself is closed by :meth:`aclose`.
        """
        body: Dict[str, Any] = {
            "type": "close",
            "request_id": self.next_request_id(),
            "window_id": window_id,
        }
        if window_size_ms is not None:
            body["window_size_ms"] = window_size_ms
        if key is not None:
            body["key"] = key
        return Window.from_wire(await self._call(body))

    async def flush(self, until: Union[str, int, None] = None) -> List[Window]:
        """Fires every open window ending at or before ``until`` (all when ``None``)."""
        body: Dict[str, Any] = {"type": "flush", "request_id": self.next_request_id()}
        if until is not None:
            body["until"] = until
        reply = await self._call(body)
        return [Window.from_wire(w) for w in reply.get("windows", [])]

    async def stats(self) -> Dict[str, Any]:
        """The coordinator's ``stats_ok`` (counters, ``lease_holder``, ``epoch``, ``config``,
        ``groups``) as a dict."""
        return await self._call({"type": "stats"})

    def subscribe(self, from_seq: FromSeq = None) -> "Subscription":
        """Every fired window with ``seq >= from_seq`` (only new ones when ``None``), in seq order,
        as an async iterator. It survives node failures: it reconnects to the next node from the
        next seq, and never yields a seq twice. ``from_seq`` may be a list (one per partition)."""
        sub = Subscription(self, from_seq)
        self._subscriptions.append(sub)
        return sub

    def subscribe_group(
        self, name: str, max_unacked: int = 1000, *, from_seq: Optional[int] = None
    ) -> "GroupSubscription":
        """Joins consumer group ``name``: each fired window goes to one member, as a
        :class:`GroupWindow` to ``ack()``. At most ``max_unacked`` windows are held
        unacknowledged. ``from_seq`` is where a new group starts."""
        sub = GroupSubscription(self, name, max_unacked, from_seq)
        self._subscriptions.append(sub)
        return sub

    async def aclose(self) -> None:
        """Closes the request connection and every subscription; calls still waiting fail
        with :class:`ClientClosedError`."""
        if self._closed:
            return
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.closed = True
            _abort(conn.writer)
            if conn.task is not None:
                conn.task.cancel()
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(ClientClosedError())
        for sub in list(self._subscriptions):
            await sub.aclose()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # -- the request connection -----------------------------------------------------------

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        reader, writer = await _open(
            self._ring, loop.time() + self.failover_timeout, self.connect_timeout, False
        )
        self._install(_Conn(reader, writer))

    def _install(self, conn: _Conn) -> None:
        # Everything still awaiting a reply goes out first, in its first order, with no await
        # in between, so that no new request slips ahead of an older one.
        for pending in self._pending.values():
            if not pending.future.done():
                self._send(conn, pending)
        self._conn = conn
        conn.task = asyncio.get_running_loop().create_task(self._read(conn))

    def _send(self, conn: _Conn, pending: _Pending) -> None:
        msg_id = next(self._msg_ids)
        conn.waiting[msg_id] = pending
        conn.writer.write(_line(msg_id, pending.tail))

    async def _call(self, body: Mapping[str, Any]) -> Dict[str, Any]:
        if self._closed:
            raise ClientClosedError()
        tail = _encode_tail(body)
        async with self._slots:
            if self._closed:
                raise ClientClosedError()
            key = next(self._calls)
            pending = _Pending(tail, asyncio.get_running_loop().create_future())
            self._pending[key] = pending
            try:
                conn = self._conn
                if conn is not None and not conn.closed:
                    self._send(conn, pending)
                    try:
                        async with conn.drain_lock:
                            await conn.writer.drain()
                    except (ConnectionError, OSError):
                        pass  # the reader sees the loss and resends
                elif self._reconnecting is None:
                    self._failed(None)
                return await pending.future
            finally:
                del self._pending[key]

    async def _read(self, conn: _Conn) -> None:
        trouble: Optional[WindowNodeError] = None
        try:
            while True:
                line = await conn.reader.readline()
                if not line.endswith(b"\n"):
                    break
                try:
                    msg = _json.loads(line)
                except ValueError:
                    continue
                if not isinstance(msg, dict):
                    continue
                is_error = msg.get("type") == "error"
                if is_error and msg.get("code") == UNAVAILABLE:
                    # This node cannot serve now: all that waits goes to the next node.
                    trouble = error_from_reply(msg)
                    break
                msg_id = msg.get("in_reply_to")
                pending = conn.waiting.pop(msg_id, None) if isinstance(msg_id, int) else None
                if msg_id is None and is_error and conn.waiting:
                    # An error the daemon could not tie to a msg_id (a line it could not read)
                    # answers the oldest request: replies come in request order.
                    pending = conn.waiting.pop(next(iter(conn.waiting)))
                if pending is None or pending.future.done():
                    continue
                self._trouble_since = None
                if is_error:
                    pending.future.set_exception(error_from_reply(msg))
                else:
                    pending.future.set_result(msg)
        except (ConnectionError, OSError, ValueError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            return
        conn.closed = True
        _abort(conn.writer)
        if self._conn is conn:
            self._conn = None
        if not self._closed and any(not p.future.done() for p in self._pending.values()):
            self._failed(trouble)

    def _failed(self, trouble: Optional[WindowNodeError]) -> None:
        loop = asyncio.get_running_loop()
        if self._trouble_since is None:
            self._trouble_since = loop.time()
        if self._reconnecting is None:
            self._reconnecting = loop.create_task(self._reconnect(trouble))

    async def _reconnect(self, trouble: Optional[WindowNodeError]) -> None:
        loop = asyncio.get_running_loop()
        try:
            assert self._trouble_since is not None
            deadline = self._trouble_since + self.failover_timeout
            if trouble is not None:
                # Error 11: give the cluster a moment (a takeover) before asking the next node.
                await asyncio.sleep(0.05)
            try:
                reader, writer = await _open(
                    self._ring, deadline, self.connect_timeout, after_failure=True
                )
            except UnavailableError as e:
                error = e
                if trouble is not None:
                    error = UnavailableError(
                        UNAVAILABLE,
                        f"{trouble.text} (and no other node served it within "
                        f"{self.failover_timeout}s)",
                        trouble.reply,
                    )
                for pending in self._pending.values():
                    if not pending.future.done():
                        pending.future.set_exception(error)
                self._trouble_since = None
                return
            if loop.time() > deadline:
                error = UnavailableError(
                    UNAVAILABLE, f"no node of {self._ring.describe()} served the request "
                    f"within {self.failover_timeout}s"
                )
                for pending in self._pending.values():
                    if not pending.future.done():
                        pending.future.set_exception(error)
                self._trouble_since = None
                _abort(writer)
                return
            self._install(_Conn(reader, writer))
        finally:
            self._reconnecting = None


class Subscription:
    """The async iterator of :meth:`Client.subscribe`. ``next_seq`` is where it would resume
    (an int, or one per partition)."""

    def __init__(self, client: Client, from_seq: FromSeq):
        self._client = client
        self._ring = _Ring(client._ring.nodes)
        self._ring.at = client._ring.at
        self.next_seq: FromSeq = list(from_seq) if isinstance(from_seq, list) else from_seq
        self._reader: Optional[asyncio.StreamReader] = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._failed_once = False
        self._closed = False

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Window:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._reader is None:
                await self._connect()
            assert self._reader is not None
            try:
                line = await self._reader.readline()
            except (ConnectionError, OSError, ValueError, asyncio.IncompleteReadError):
                line = b""
            if not line.endswith(b"\n"):
                self._drop()
                continue
            try:
                msg = _json.loads(line)
            except ValueError:
                continue
            kind = msg.get("type") if isinstance(msg, dict) else None
            if kind == "window_closed":
                window = Window.from_wire(msg)
                if self._take(window):
                    return window
            elif kind == "error":
                if msg.get("code") == UNAVAILABLE:
                    # Fallen behind, or the node is stopping: resume elsewhere from next_seq.
                    self._drop()
                    continue
                raise error_from_reply(msg)
            # Anything else (late_event) is not a fired window.

    def _take(self, window: Window) -> bool:
        """Whether ``window`` is new; moves ``next_seq`` past it."""
        seq = window.seq
        if seq is None:
            return True
        if isinstance(self.next_seq, list):
            p = window.partition or 0
            if p >= len(self.next_seq):
                self.next_seq.extend([0] * (p + 1 - len(self.next_seq)))
            if seq < self.next_seq[p]:
                return False
            self.next_seq[p] = seq + 1
            return True
        if self.next_seq is not None and seq < self.next_seq:
            return False
        self.next_seq = seq + 1
        return True

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._client.failover_timeout
        while True:
            reader, writer = await _open(
                self._ring, deadline, self._client.connect_timeout, self._failed_once
            )
            self._failed_once = True
            try:
                request: Dict[str, Any] = {"type": "subscribe", "msg_id": 1}
                if self.next_seq is not None:
                    request["from_seq"] = self.next_seq
                writer.write(_whole(request))
                reply = await self._handshake(reader, deadline - loop.time())
            except BaseException:
                _abort(writer)
                raise
            if reply is not None and reply.get("type") == "error":
                if reply.get("code") != UNAVAILABLE:
                    _abort(writer)
                    raise error_from_reply(reply)
                reply = None
            if reply is None:
                _abort(writer)
                if loop.time() >= deadline:
                    raise UnavailableError(
                        UNAVAILABLE, f"no node of {self._ring.describe()} took the subscription"
                    )
                await asyncio.sleep(0.05)
                continue
            started = reply.get("from_seq")
            if self.next_seq is None or (
                isinstance(started, list) and not isinstance(self.next_seq, list)
            ):
                self.next_seq = list(started) if isinstance(started, list) else started
            self._reader, self._writer = reader, writer
            return

    async def _handshake(
        self, reader: asyncio.StreamReader, timeout: float
    ) -> Optional[Dict[str, Any]]:
        """The reply to the subscribe request; None when the connection ended first."""
        try:
            while True:
                line = await asyncio.wait_for(reader.readline(), max(timeout, 0.1))
                if not line.endswith(b"\n"):
                    return None
                msg = _json.loads(line)
                if isinstance(msg, dict) and (
                    msg.get("in_reply_to") == 1 or msg.get("type") == "error"
                ):
                    return msg
        except (ConnectionError, OSError, ValueError, asyncio.TimeoutError):
            return None

    def _drop(self) -> None:
        """Ends the current connection; the next read reconnects (to the next node)."""
        _abort(self._writer)
        self._reader = self._writer = None

    async def aclose(self) -> None:
        """Ends the subscription: the iterator stops."""
        self._closed = True
        self._drop()
        if self in self._client._subscriptions:
            self._client._subscriptions.remove(self)


class GroupSubscription:
    """The async iterator of :meth:`Client.subscribe_group`: :class:`GroupWindow` objects.

    A reader task takes every line of the member's connection: windows go to the iterator,
    ``ack_ok`` replies to the ``ack()`` that awaits them. When the connection ends the member
    joins again at the next node; the windows it held unacknowledged are handed out again by the
    daemon (their ``ack()`` raises :class:`DeliveryLostError`).
    """

    def __init__(
        self, client: Client, name: str, max_unacked: int, from_seq: Optional[int]
    ):
        self._client = client
        self.name = name
        self.max_unacked = max_unacked
        self._from_seq = from_seq
        self._ring = _Ring(client._ring.nodes)
        self._ring.at = client._ring.at
        # Made on first use, inside the event loop (Python 3.9 binds a queue to a loop when it
        # is made, and the blocking wrapper makes subscriptions from another thread).
        self._queue_: "Optional[asyncio.Queue[Any]]" = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._generation = 0
        self._acks: Dict[int, "asyncio.Future[Dict[str, Any]]"] = {}
        self._msg_ids = itertools.count(2)
        self._task: Optional["asyncio.Task[None]"] = None
        self._joined: Optional["asyncio.Future[None]"] = None
        self._closed = False

    def __aiter__(self) -> "GroupSubscription":
        return self

    @property
    def _queue(self) -> "asyncio.Queue[Any]":
        if self._queue_ is None:
            self._queue_ = asyncio.Queue()
        return self._queue_

    def _start(self) -> None:
        if self._task is None and not self._closed:
            self._joined = asyncio.get_running_loop().create_future()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def __anext__(self) -> GroupWindow:
        self._start()
        item = await self._queue.get()
        if isinstance(item, BaseException):
            self._queue.put_nowait(item)  # every later call ends the same way
            raise item
        return item

    async def joined(self) -> None:
        """Waits until the member has joined the group (the first ``subscribe_ok``)."""
        self._start()
        if self._joined is None:
            raise ClientClosedError("the group subscription is closed")
        await asyncio.shield(self._joined)

    async def ack(self, windows: Iterable[GroupWindow]) -> int:
        """Acknowledges ``windows`` (one request per partition); returns how many were not
        acknowledged before."""
        by_partition: Dict[Tuple[Optional[int], int], List[int]] = {}
        for w in windows:
            generation = getattr(w, "_generation", self._generation)
            by_partition.setdefault((w.partition, generation), []).append(w.seq)  # type: ignore[arg-type]
        total = 0
        for (partition, generation), seqs in by_partition.items():
            total += await self._ack(seqs, partition, generation)
        return total

    async def _ack_one(self, window: GroupWindow) -> int:
        return await self._ack([window.seq], window.partition, getattr(window, "_generation"))

    async def _ack(self, seqs: List[Any], partition: Optional[int], generation: int) -> int:
        if self._closed:
            raise ClientClosedError("the group subscription is closed")
        if generation != self._generation or self._writer is None:
            raise DeliveryLostError(
                UNAVAILABLE,
                f"the connection that delivered seqs {seqs} ended; the group hands them out again",
            )
        msg_id = next(self._msg_ids)
        request: Dict[str, Any] = {"type": "ack", "msg_id": msg_id, "seqs": seqs}
        if partition is not None:
            request["partition"] = partition
        future = asyncio.get_running_loop().create_future()
        self._acks[msg_id] = future
        self._writer.write(_whole(request))
        reply = await future
        return int(reply.get("acked", 0))

    async def _run(self) -> None:
        """Joins, reads, and joins again at the next node when the connection ends."""
        loop = asyncio.get_running_loop()
        failed_once = False
        try:
            while not self._closed:
                deadline = loop.time() + self._client.failover_timeout
                reader, writer = await _open(
                    self._ring, deadline, self._client.connect_timeout, failed_once
                )
                failed_once = True
                request: Dict[str, Any] = {
                    "type": "subscribe",
                    "msg_id": 1,
                    "group": self.name,
                    "max_unacked": self.max_unacked,
                }
                if self._from_seq is not None:
                    request["from_seq"] = self._from_seq
                writer.write(_whole(request))
                self._generation += 1
                self._writer = writer
                await self._read(reader, writer)
                self._writer = None
                _abort(writer)
                self._fail_acks(
                    DeliveryLostError(
                        UNAVAILABLE,
                        "the member's connection ended before the ack was answered; it may "
                        "have taken effect, and if not the group hands the window out again",
                    )
                )
                if not self._closed:
                    await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            pass
        except WindowNodeError as e:
            self._queue.put_nowait(e)
            if self._joined is not None and not self._joined.done():
                self._joined.set_exception(e)
        finally:
            _abort(self._writer)
            self._writer = None
            self._fail_acks(ClientClosedError("the group subscription is closed"))

    def _fail_acks(self, error: WindowNodeError) -> None:
        """Ends every ack awaiting its answer with ``error``."""
        acks, self._acks = self._acks, {}
        for future in acks.values():
            if not future.done():
                future.set_exception(error)

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        generation = self._generation
        while True:
            try:
                line = await reader.readline()
            except (ConnectionError, OSError, ValueError, asyncio.IncompleteReadError):
                return
            if not line.endswith(b"\n"):
                return
            try:
                msg = _json.loads(line)
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            kind = msg.get("type")
            if kind == "window_closed" and "in_reply_to" not in msg:
                window = GroupWindow.from_wire(msg)
                window._acker = self._ack_one
                window._generation = generation  # type: ignore[attr-defined]
                self._queue.put_nowait(window)
                continue
            reply_to = msg.get("in_reply_to")
            if reply_to == 1:
                if kind == "error":
                    if msg.get("code") == UNAVAILABLE:
                        return  # join again, at the next node
                    raise error_from_reply(msg)
                if self._joined is not None and not self._joined.done():
                    self._joined.set_result(None)
                continue
            future = self._acks.pop(reply_to, None) if isinstance(reply_to, int) else None
            if future is not None and not future.done():
                if kind == "error":
                    future.set_exception(error_from_reply(msg))
                else:
                    future.set_result(msg)
            elif kind == "error" and msg.get("code") == UNAVAILABLE:
                return

    def _drop(self) -> None:
        """Aborts the member's connection (RST); the member joins again. For tests."""
        _abort(self._writer)

    def _kill(self) -> None:
        """Aborts the member's connection (RST) and stops, as a crashed consumer would: what it
        held unacknowledged goes to other members. For tests."""
        self._closed = True
        _abort(self._writer)
        if self._task is not None:
            self._task.cancel()
        self._queue.put_nowait(StopAsyncIteration())

    async def aclose(self) -> None:
        """Leaves the group: the connection ends, and what this member held unacknowledged
        is handed out to the others. The iterator stops."""
        if self._closed and self._task is None:
            return
        self._closed = True
        _abort(self._writer)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        self._queue.put_nowait(StopAsyncIteration())
        if self in self._client._subscriptions:
            self._client._subscriptions.remove(self)


async def connect(
    nodes: Union[Node, Iterable[Node]],
    *,
    max_in_flight: int = 16,
    failover_timeout: float = 30.0,
    connect_timeout: float = 5.0,
    client_name: Optional[str] = None,
) -> Client:
    """Connects to the first reachable node of ``nodes`` (``"host:port"`` strings or
    ``(host, port)`` tuples; one node alone is fine) and returns the :class:`Client`."""
    if isinstance(nodes, str) or (
        isinstance(nodes, tuple) and len(nodes) == 2 and isinstance(nodes[1], int)
    ):
        nodes = [nodes]  # type: ignore[list-item]
    client = Client(
        nodes,
        max_in_flight=max_in_flight,
        failover_timeout=failover_timeout,
        connect_timeout=connect_timeout,
        client_name=client_name,
    )
    await client._start()
    return client


__all__ = [
    "Client",
    "GroupSubscription",
    "Subscription",
    "connect",
    "parse_node",
]
