"""Raw ingest through the Python client (window_node_client), for `cargo xtask bench`:
--events events (ids 0.., 10 keys, one millisecond apart: none late or a duplicate) in requests
of --batch, --in-flight awaited at once, against the daemon at --addr. Prints one JSON line:
events, seconds (first request to last reply), accepted."""

import argparse
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python", "src"))

from window_node_client import _json, connect  # noqa: E402

BASE = 1_705_305_600_000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--in-flight", type=int, default=16)
    args = parser.parse_args()
    batches = [
        [
            {"id": i, "timestamp": BASE + i, "key": f"k{i % 10}"}
            for i in range(first, min(first + args.batch, args.events))
        ]
        for first in range(0, args.events, args.batch)
    ]
    client = await connect(args.addr, max_in_flight=args.in_flight)
    next_batch = 0
    accepted = 0

    async def worker() -> None:
        nonlocal next_batch, accepted
        while next_batch < len(batches):
            batch = batches[next_batch]
            next_batch += 1
            counts = await client.ingest(batch)
            accepted += counts.accepted

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.in_flight)))
    seconds = time.perf_counter() - started
    await client.aclose()
    print(
        json.dumps(
            {
                "events": args.events,
                "seconds": seconds,
                "accepted": accepted,
                # orjson when installed (window-node-client[fast]), the standard library otherwise.
                "encoder": _json.ENCODER,
            }
        )
    )


asyncio.run(main())
