#!/usr/bin/env python3
"""The naive peer of `window-node aggregate` in the `pipe` benchmark: the obvious
single-threaded code with the standard library's json and datetime.

    python3 bench/peers/naive.py EVENTS.jsonl [WINDOW_MS] [LATENESS_MS] > windows.jsonl

One JSON event per line ({"id", "timestamp": RFC 3339 or epoch ms, "key"?}); tumbling windows
of WINDOW_MS (default 60000) aligned to the epoch; the watermark is the highest accepted event
time minus LATENESS_MS (default 5000); an event whose window ended at or before the watermark
is late and dropped; an id counts once per window. A window fires when the watermark reaches
its end, in (start, key) order, and every open window fires at the end of input. Each fired
window is one line: window_start_ms, key (if any), count, ids in arrival order, reason.
"""

import json
import sys
from datetime import datetime, timedelta, timezone

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_MS = timedelta(milliseconds=1)


def millis(timestamp):
    if isinstance(timestamp, int):
        return timestamp
    return (datetime.fromisoformat(timestamp) - EPOCH) // ONE_MS


def emit(out, start, key, ids, reason):
    window = {"window_start_ms": start, "count": len(ids), "ids": ids, "reason": reason}
    if key is not None:
        window["key"] = key
    out.write(json.dumps(window) + "\n")


def main():
    path = sys.argv[1]
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 60000
    lateness = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
    out = sys.stdout
    windows = {}  # (start, key) -> (ids in order, set of ids)
    watermark = None
    late = duplicates = 0
    with open(path) as events:
        for line in events:
            if not line.strip():
                continue
            event = json.loads(line)
            t = millis(event["timestamp"])
            start = t // size * size
            if watermark is not None and start + size <= watermark:
                late += 1
                continue
            key = event.get("key")
            ids, seen = windows.setdefault((start, key), ([], set()))
            if event["id"] in seen:
                duplicates += 1
                continue
            ids.append(event["id"])
            seen.add(event["id"])
            if watermark is None or t - lateness > watermark:
                watermark = t - lateness
                due = [w for w in windows if w[0] + size <= watermark]
                for w in sorted(due, key=lambda w: (w[0], w[1] is not None, w[1] or "")):
                    emit(out, w[0], w[1], windows.pop(w)[0], "watermark")
    for w in sorted(windows, key=lambda w: (w[0], w[1] is not None, w[1] or "")):
        emit(out, w[0], w[1], windows[w][0], "end_of_input")
    print(f"naive.py: {late} late, {duplicates} duplicate", file=sys.stderr)


if __name__ == "__main__":
    main()
