#!/usr/bin/env python3
"""The Bytewax peer of `window-node aggregate` in the `pipe` benchmark (`cargo xtask bench --peers`).

    python bench/peers/bytewax_windows.py EVENTS.jsonl [WINDOW_MS] [LATENESS_MS] > windows.jsonl

The same windows as bench/peers/naive.py, as a Bytewax dataflow run on one worker
(`bytewax.testing.run_main`): `FileSource` lines, a `map` step parsing each event (stdlib `json`
and `datetime`, as Bytewax's own examples do), one key, and a `stateful_batch` step holding the
open windows, then `StdOutSink`.

Why not Bytewax's own windowing (`EventClock` + `TumblingWindower` + `collect_window`): it counts
an event late when its time is behind the watermark, even while the event's window is still open,
where the node and the naive script drop an event only when its window already closed; and its
watermark moves on with system time between events, so a file read fast or slow gives different
windows. The stateful step keeps the naive script's rule: the watermark is the highest accepted
event time minus LATENESS_MS, an event whose window ended at or before it is late, an id counts
once per window, windows fire in start order when the watermark passes their end and at the end
of input.
"""

import json
import sys
from datetime import datetime, timedelta, timezone

import bytewax.operators as op
from bytewax.connectors.files import FileSource
from bytewax.connectors.stdio import StdOutSink
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.testing import run_main

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_MS = timedelta(milliseconds=1)


def parse(line):
    event = json.loads(line)
    timestamp = event["timestamp"]
    if not isinstance(timestamp, int):
        timestamp = (datetime.fromisoformat(timestamp) - EPOCH) // ONE_MS
    return (timestamp, event["id"])


def render(start, ids, reason):
    return json.dumps(
        {"window_start_ms": start, "count": len(ids), "ids": ids, "reason": reason}
    )


class Windows(StatefulBatchLogic):
    """The open windows of one key: start -> (ids in arrival order, set of ids)."""

    def __init__(self, size, lateness):
        self.size = size
        self.lateness = lateness
        self.windows = {}
        self.watermark = None

    def on_batch(self, values):
        fired = []
        size, lateness, windows = self.size, self.lateness, self.windows
        for t, event_id in values:
            start = t // size * size
            if self.watermark is not None and start + size <= self.watermark:
                continue
            ids, seen = windows.setdefault(start, ([], set()))
            if event_id in seen:
                continue
            ids.append(event_id)
            seen.add(event_id)
            if self.watermark is None or t - lateness > self.watermark:
                self.watermark = t - lateness
                due = sorted(w for w in windows if w + size <= self.watermark)
                for w in due:
                    fired.append(render(w, windows.pop(w)[0], "watermark"))
        return fired, StatefulBatchLogic.RETAIN

    def on_eof(self):
        fired = [render(w, self.windows[w][0], "end_of_input") for w in sorted(self.windows)]
        self.windows = {}
        return fired, StatefulBatchLogic.DISCARD

    def snapshot(self):
        return (self.windows, self.watermark)


def flow(path, size, lateness):
    dataflow = Dataflow("pipe_windows")
    lines = op.input("read", dataflow, FileSource(path))
    events = op.map("parse", lines, parse)
    keyed = op.key_on("one_key", events, lambda _event: "all")
    fired = op.stateful_batch("windows", keyed, lambda _resume: Windows(size, lateness))
    op.output("write", op.map("text", fired, lambda kv: kv[1]), StdOutSink())
    return dataflow


def main():
    path = sys.argv[1]
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 60000
    lateness = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
    run_main(flow(path, size, lateness))


if __name__ == "__main__":
    main()
