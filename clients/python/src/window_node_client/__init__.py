"""Python client of the window-node daemon (``window-node serve``).

The asyncio API::

    client = await window_node_client.connect(["127.0.0.1:7070", "127.0.0.1:7071"])
    await client.ingest([{"id": 1, "timestamp": 1705312810000, "payload": {"user": 7}}])
    async for window in client.subscribe(from_seq=0):
        ...

and the blocking wrapper, :mod:`window_node_client.blocking`, with the same operations. The
standard library only; the wire protocol is docs/protocol.md of the window-node repository.
"""

from .client import Client, GroupSubscription, Subscription, connect, parse_node
from .errors import (
    ClientClosedError,
    DeliveryLostError,
    InternalError,
    MalformedRequestError,
    UnavailableError,
    UnknownRequestError,
    WindowNodeError,
    WindowNotOpenError,
)
from .types import GroupWindow, IngestResult, Window

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ClientClosedError",
    "DeliveryLostError",
    "GroupSubscription",
    "GroupWindow",
    "IngestResult",
    "InternalError",
    "MalformedRequestError",
    "Subscription",
    "UnavailableError",
    "UnknownRequestError",
    "Window",
    "WindowNodeError",
    "WindowNotOpenError",
    "connect",
    "parse_node",
]
