"""Typed errors carrying the daemon's wire code (docs/protocol.md, "Errors")."""

from __future__ import annotations

from typing import Any, Dict, Optional

UNKNOWN_REQUEST = 10
UNAVAILABLE = 11
MALFORMED = 12
INTERNAL = 13
NOT_OPEN = 20


class WindowNodeError(Exception):
    """An error reply of the daemon, or the client's own failure to reach one.

    ``code`` is the wire code (``None`` only for :class:`ClientClosedError`), ``text`` the
    daemon's explanation, ``reply`` the whole error reply when there was one.
    """

    def __init__(self, code: Optional[int], text: str, reply: Optional[Dict[str, Any]] = None):
        super().__init__(f"[{code}] {text}" if code is not None else text)
        self.code = code
        self.text = text
        self.reply = reply


class UnknownRequestError(WindowNodeError):
    """Code 10: the daemon does not serve this request type."""


class UnavailableError(WindowNodeError):
    """Code 11: no node could serve the request in time (the client already retried it)."""


class MalformedRequestError(WindowNodeError):
    """Code 12: a bad request (an invalid event, a bad field); nothing of it was applied."""


class InternalError(WindowNodeError):
    """Code 13: the daemon failed internally."""


class WindowNotOpenError(WindowNodeError):
    """Code 20: ``close`` of a window that is not open."""


class DeliveryLostError(UnavailableError):
    """An ``ack`` whose answer was lost: the connection that delivered the window ended first.

    The ack may or may not have taken effect. If it did not, the daemon hands the window out
    again (with ``delivery`` raised), possibly to this very member: consumer groups deliver at
    least once, so drop a repeat by ``seq``.
    """


class ClientClosedError(WindowNodeError):
    """The client or subscription was closed with ``aclose()``."""

    def __init__(self, text: str = "the client is closed"):
        super().__init__(None, text)


_BY_CODE = {
    UNKNOWN_REQUEST: UnknownRequestError,
    UNAVAILABLE: UnavailableError,
    MALFORMED: MalformedRequestError,
    INTERNAL: InternalError,
    NOT_OPEN: WindowNotOpenError,
}


def error_from_reply(reply: Dict[str, Any]) -> WindowNodeError:
    """The typed error for an ``{"type": "error", ...}`` reply."""
    code = reply.get("code")
    cls = _BY_CODE.get(code, WindowNodeError) if isinstance(code, int) else WindowNodeError
    return cls(code, str(reply.get("text", "")), reply)
