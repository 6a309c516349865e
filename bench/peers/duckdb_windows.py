#!/usr/bin/env python3
"""The DuckDB peer of `window-node aggregate` in the `pipe` benchmark (`cargo xtask bench --peers`).

    python bench/peers/duckdb_windows.py EVENTS.jsonl [WINDOW_MS] [LATENESS_MS] > windows.jsonl

The same windows as bench/peers/naive.py, written as a DuckDB user would: `read_json`, the
arrival order made a column with `row_number() OVER ()` (DuckDB documents that an empty OVER
clause keeps the input's order), the watermark as a running `max` of event time in that order,
the late events dropped with the naive script's rule (an event whose window ended at or before the
watermark of the events before it), then `GROUP BY` window with `list(id ORDER BY rn)`.

Why the rule needs no iteration: a late event lies before the end of a window the watermark
passed, so it is below the highest event time so far and never raises it; the running maximum
over all events equals the one over the accepted events. Counting the current event in it
changes nothing either: an event always lies before its own window's end. A window whose end the
final watermark passed fired on the watermark, the others at the end of input; windows fire in
start order, since a window that opened after a later one fired would be late.

Limits, shared with the Polars peer: events without a key (the benchmark's workload), RFC 3339
timestamp strings, and no de-duplication of ids within a window: the workload's ids are unique,
so it would only cost DuckDB time, and the checker compares every window with the node's.
DuckDB uses every core (its default).
"""

import sys

import duckdb


def main():
    path = sys.argv[1]
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 60000
    lateness = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
    con = duckdb.connect()
    query = f"""
        WITH events AS (
            SELECT id, epoch_ms(CAST(timestamp AS TIMESTAMPTZ)) AS t, row_number() OVER () AS rn
            FROM read_json(?, format = 'newline_delimited',
                           columns = {{id: 'UBIGINT', timestamp: 'VARCHAR'}})
        ),
        marked AS (
            SELECT id, rn, t, floor(t / {size})::BIGINT * {size} AS start,
                   max(t) OVER (ORDER BY rn ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
                       - {lateness} AS watermark
            FROM events
        ),
        final AS (SELECT max(t) - {lateness} AS watermark FROM events)
        SELECT start AS window_start_ms, count(*) AS count, list(id ORDER BY rn) AS ids,
               CASE WHEN start + {size} <= (SELECT watermark FROM final)
                    THEN 'watermark' ELSE 'end_of_input' END AS reason
        FROM marked
        WHERE start + {size} > watermark
        GROUP BY start
        ORDER BY start
    """
    con.execute(f"COPY ({query}) TO '/dev/stdout' (FORMAT json)", [path])


if __name__ == "__main__":
    main()
