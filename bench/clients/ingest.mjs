// Raw ingest through the TypeScript client (window-node-client), for `cargo xtask bench`:
// --events events (ids 0.., 10 keys, one millisecond apart: none late or a duplicate) in
// requests of --batch, --in-flight awaited at once, against the daemon at --addr. Prints one
// JSON line: events, seconds (first request to last reply), accepted.
import { parseArgs } from "node:util";
import { performance } from "node:perf_hooks";

const { values } = parseArgs({
  options: {
    addr: { type: "string" },
    client: { type: "string" },
    events: { type: "string", default: "1000000" },
    batch: { type: "string", default: "500" },
    "in-flight": { type: "string", default: "16" },
  },
});
const { connect } = await import(values.client);
const events = Number(values.events);
const batch = Number(values.batch);
const inFlight = Number(values["in-flight"]);
const BASE = 1_705_305_600_000;
const batches = [];
for (let first = 0; first < events; first += batch) {
  const b = [];
  for (let i = first; i < Math.min(first + batch, events); i++) {
    b.push({ id: i, timestamp: BASE + i, key: `k${i % 10}` });
  }
  batches.push(b);
}
const client = await connect({ nodes: [values.addr], maxInFlight: inFlight });
let next = 0;
let accepted = 0;
const started = performance.now();
await Promise.all(
  Array.from({ length: inFlight }, async () => {
    for (;;) {
      const i = next++;
      if (i >= batches.length) return;
      const counts = await client.ingest(batches[i]);
      accepted += counts.accepted;
    }
  }),
);
const seconds = (performance.now() - started) / 1000;
await client.end();
console.log(JSON.stringify({ events, seconds, accepted }));
