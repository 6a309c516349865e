#!/usr/bin/env python3
"""The Polars peer of `window-node aggregate` in the `pipe` benchmark (`cargo xtask bench --peers`).

    python bench/peers/polars_windows.py EVENTS.jsonl [WINDOW_MS] [LATENESS_MS] > windows.jsonl

The same windows as bench/peers/naive.py, written as a Polars user would: `read_ndjson`, the
times parsed with `str.to_datetime`, the watermark as `cum_max` of event time in arrival order,
the late events dropped with the naive script's rule (an event whose window ended at or before the
watermark), then `group_by` window with the ids collected in arrival order.

Why the rule needs no iteration: a late event lies before the end of a window the watermark
passed, so it is below the highest event time so far and never raises it; the running maximum
over all events equals the one over the accepted events. Counting the current event in it
changes nothing either: an event always lies before its own window's end. A window whose end the
final watermark passed fired on the watermark, the others at the end of input; windows fire in
start order, since a window that opened after a later one fired would be late.

Limits, shared with the DuckDB peer: events without a key (the benchmark's workload), RFC 3339
timestamp strings, and no de-duplication of ids within a window: the workload's ids are unique,
so it would only cost Polars time, and the checker compares every window with the node's.
Polars uses every core (its default).
"""

import sys

import polars as pl


def main():
    path = sys.argv[1]
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 60000
    lateness = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
    events = pl.read_ndjson(path, schema={"id": pl.UInt64, "timestamp": pl.String})
    t = (
        pl.col("timestamp")
        .str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%#z", time_unit="ms", time_zone="UTC")
        .dt.epoch("ms")
    )
    events = events.select("id", t.alias("t")).with_columns(
        ((pl.col("t") // size) * size).alias("window_start_ms"),
        (pl.col("t").cum_max() - lateness).alias("watermark"),
    )
    final_watermark = events["t"].max() - lateness
    windows = (
        events.filter(pl.col("window_start_ms") + size > pl.col("watermark"))
        .group_by("window_start_ms", maintain_order=True)
        .agg(pl.len().alias("count"), pl.col("id").alias("ids"))
        .sort("window_start_ms")
        .with_columns(
            pl.when(pl.col("window_start_ms") + size <= final_watermark)
            .then(pl.lit("watermark"))
            .otherwise(pl.lit("end_of_input"))
            .alias("reason")
        )
    )
    windows.write_ndjson(sys.stdout.buffer)


if __name__ == "__main__":
    main()
