"""JSON in and out of the wire, through orjson when it is installed (``pip install
window-node-client[fast]``: about five times faster at encoding a batch of events than the
standard library, which on its own caps a client at well under a million events a second) and
through the standard library's ``json`` otherwise. Both write the same JSON values and refuse
the same things: orjson writes NaN and infinities as ``null`` where ``json`` (with
``allow_nan=False``) refuses them, so a text with ``null`` in it is encoded again by ``json``;
orjson is told to pass datetimes, dataclasses and subclasses of the JSON types on, and anything
it refuses (those, keys that are not strings, integers beyond 64 bits) is encoded by ``json``,
which takes or refuses it as without orjson. (Two types ``json`` refuses, ``uuid.UUID`` and plain
``enum.Enum`` members, orjson writes as their string and value.)
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

#: Which encoder is in use: ``"orjson"`` or ``"json"``.
ENCODER = "orjson" if _orjson is not None else "json"

_OPTIONS = (
    _orjson.OPT_PASSTHROUGH_DATETIME
    | _orjson.OPT_PASSTHROUGH_DATACLASS
    | _orjson.OPT_PASSTHROUGH_SUBCLASS
    if _orjson is not None
    else 0
)


def _stdlib_dumps(value: Any) -> bytes:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON, UTF-8; ``ValueError`` for NaN or an infinity, ``TypeError``
    for what JSON cannot hold."""
    if _orjson is not None:
        try:
            data = _orjson.dumps(value, option=_OPTIONS)
        except TypeError:
            return _stdlib_dumps(value)
        if b"null" not in data:
            return data
    return _stdlib_dumps(value)


def loads(data: bytes) -> Any:
    """One JSON value; ``ValueError`` when ``data`` is not JSON."""
    if _orjson is not None:
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            # What orjson refuses and json takes (integers beyond 64 bits) is read by json.
            pass
    return json.loads(data)
