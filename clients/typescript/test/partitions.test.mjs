// The client over `serve --partitions 3` on one real redis-server: a subscription and a
// consumer group keep a seq per partition, every window comes once, a subscription resumed after
// a lost connection starts each partition where it left off, and an ack names its partition.

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { connect } from "window-node-client";
import { collect, idsOf, startRedis, startServe, stopAll, waitFor } from "./harness.mjs";

after(stopAll);

const BASE = 1_705_305_600_000;
const KEYS = ["k0", "k1", "k2", "k3", "k4", "k5"];

/** Events `ids`, each in a one-second window of its own, spread over six keys. */
function keyed(from, to) {
  return Array.from({ length: to - from }, (_, i) => ({
    id: from + i,
    timestamp: BASE + (from + i) * 1000,
    key: KEYS[(from + i) % KEYS.length],
    payload: { n: from + i },
  }));
}

/** Every id once, and each partition's seqs dense from 0 in the order they came. */
function checkPartitions(windows, count) {
  assert.deepEqual(idsOf(windows).sort((a, b) => a - b), Array.from({ length: count }, (_, i) => i));
  const byPartition = new Map();
  for (const w of windows) {
    assert.notEqual(w.partition, undefined, `a window without its partition: ${JSON.stringify(w)}`);
    if (!byPartition.has(w.partition)) byPartition.set(w.partition, []);
    byPartition.get(w.partition).push(w.seq);
  }
  assert.ok(byPartition.size > 1, "the keys spread over several partitions");
  for (const [partition, seqs] of byPartition) {
    assert.deepEqual(seqs, seqs.map((_, i) => i), `partition ${partition}: seqs dense from 0`);
  }
}

test("over --partitions 3: every window once, a seq per partition, resumed per partition, acks by partition", async (t) => {
  const redis = await startRedis();
  if (redis === null) {
    t.skip("redis-server is not installed");
    return;
  }
  const options = [
    "--store", redis.url, "--namespace", "ts", "--partitions", "3", "--lease-ttl", "1s",
    "--window-size", "1s", "--max-events", "1", "--idle-timeout", "0s",
  ];
  const nodes = await Promise.all([startServe(options), startServe(options)]);
  const client = await connect({ nodes: nodes.map((n) => n.address) });
  try {
    await waitFor("every partition held", async () => {
      const parts = (await client.stats()).partitions ?? [];
      return parts.length === 3 && parts.every((p) => p.leaseHolder);
    }, 20_000, 100);
    const member = client.subscribeGroup("g", { maxUnacked: 100, fromSeq: 0 });
    await member.whenSubscribed();
    const subscription = client.subscribe({ fromSeq: 0 });
    await subscription.whenSubscribed();
    await client.ingest(keyed(0, 18));
    const windows = await collect(subscription, (ws) => ws.length >= 9);
    // A lost connection: the subscription resumes each partition after its last seq.
    subscription.dropConnection();
    windows.push(...(await collect(subscription, (ws) => windows.length + ws.length >= 18)));
    await client.ingest(keyed(18, 24));
    windows.push(...(await collect(subscription, (ws) => windows.length + ws.length >= 24)));
    checkPartitions(windows, 24);
    assert.deepEqual(
      windows.flatMap((w) => w.payloads),
      idsOf(windows).map((n) => ({ n })),
      "payloads come back with their events",
    );

    const got = await collect(member, (ws) => ws.length >= 24);
    checkPartitions(got, 24);
    await Promise.all(got.map((w) => w.ack()));
    await waitFor("every window acknowledged", async () => {
      const [group] = (await client.stats()).groups ?? [];
      return group?.acked === 24 && group?.pending === 0;
    }, 10_000, 50);
    subscription.close();
    member.close();
  } finally {
    await client.end();
  }
});
