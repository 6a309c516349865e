"""What the daemon sends back: fired windows and ingest counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional


@dataclass
class IngestResult:
    """The counts of an ``ingest_ok``: events added, duplicates ignored, late events dropped."""

    accepted: int
    duplicates: int
    late: int


@dataclass
class Window:
    """A fired window (``window_closed``, or an entry of ``flushed``).

    ``events`` are the ids in the order first admitted; ``payloads`` (one per id, ``None`` for an
    event without one) only when some event carried a payload; ``sum``/``min``/``max`` only when
    events had values. ``seq`` is the window's position in the durable output log (per
    partition with ``--partitions``); ``delivery`` is set on consumer-group deliveries. ``raw``
    is the message as the daemon sent it.
    """

    window_id: str
    window_start: str
    window_end: str
    count: int
    events: List[Any]
    reason: Optional[str] = None
    seq: Optional[int] = None
    epoch: Optional[int] = None
    key: Optional[str] = None
    payloads: Optional[List[Any]] = None
    sum: Optional[float] = None
    min: Optional[float] = None
    max: Optional[float] = None
    partition: Optional[int] = None
    delivery: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, msg: Dict[str, Any]) -> "Window":
        return cls(
            window_id=msg.get("window_id", ""),
            window_start=msg.get("window_start", ""),
            window_end=msg.get("window_end", ""),
            count=msg.get("count", 0),
            events=list(msg.get("events", [])),
            reason=msg.get("reason"),
            seq=msg.get("seq"),
            epoch=msg.get("epoch"),
            key=msg.get("key"),
            payloads=msg.get("payloads"),
            sum=msg.get("sum"),
            min=msg.get("min"),
            max=msg.get("max"),
            partition=msg.get("partition"),
            delivery=msg.get("delivery"),
            raw=msg,
        )


class GroupWindow(Window):
    """A window handed to this consumer-group member; acknowledge it with :meth:`ack`.

    In the asyncio API ``ack()`` returns an awaitable; in the blocking wrapper it blocks. Both
    end once the acknowledgement is durable, and raise
    :class:`~window_node_client.DeliveryLostError` when the connection that delivered the window
    ended first (the group then hands the window out again).
    """

    _acker: Optional[Callable[["GroupWindow"], Any]] = None

    def ack(self) -> Any:
        assert self._acker is not None, "a GroupWindow comes from a group subscription"
        return self._acker(self)
