"""The wire's JSON: orjson (when installed) and the standard library must agree on what they
write and what they refuse. Runs against whichever encoder is installed, and against the
standard library alone by hiding orjson."""

import dataclasses
import datetime
import importlib
import json
import math
import sys

import pytest

from window_node_client import _json

SAMPLES = [
    {"type": "ingest", "events": [{"id": 1, "timestamp": 1705305600000, "key": "k1", "value": 2.5}]},
    {"id": "ä-ß", "payload": {"nested": [1, "two", None, True, {"x": -0.0}], "unicode": "→ 東京"}},
    {"id": 2, "payload": None},
    {"big": 2**70, "neg": -(2**63), "float": 1e16, "small": 5e-324},
    {1: "int key"},
    ["a", ("tuple",), []],
]


def encoders():
    yield "installed", _json
    saved = sys.modules.get("orjson")
    sys.modules["orjson"] = None  # makes `import orjson` fail
    try:
        yield "stdlib", importlib.reload(_json)
    finally:
        if saved is not None:
            sys.modules["orjson"] = saved
        else:
            del sys.modules["orjson"]
        importlib.reload(_json)


def test_every_encoder_writes_the_values_json_writes_and_reads_them_back():
    for name, enc in encoders():
        for sample in SAMPLES:
            written = enc.dumps(sample)
            assert isinstance(written, bytes), name
            want = json.loads(json.dumps(sample, allow_nan=False))
            assert json.loads(written) == want, (name, sample)
            assert enc.loads(written) == want, (name, sample)


def test_every_encoder_refuses_what_json_refuses():
    @dataclasses.dataclass
    class Point:
        x: int

    for name, enc in encoders():
        for bad in [math.nan, math.inf, -math.inf, {"value": float("nan")}, [1, math.inf]]:
            with pytest.raises(ValueError):
                enc.dumps(bad)
        for bad in [datetime.datetime(2024, 1, 15), Point(1), {"p": object()}, b"bytes"]:
            with pytest.raises(TypeError):
                enc.dumps(bad)
        with pytest.raises(ValueError):
            enc.loads(b"{not json")


def test_a_line_with_an_integer_beyond_64_bits_is_read():
    for name, enc in encoders():
        assert enc.loads(b'{"seq": 36893488147419103232}') == {"seq": 2**65}, name
