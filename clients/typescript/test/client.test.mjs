// The client against one real `window-node serve`: every window exactly once, a subscriber's
// resume after a lost connection, a consumer group losing a member, a bad event's typed error.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { connect, WindowNodeError, ErrorCode } from "window-node-client";
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { collect, idsOf, killed, startNode, stopAll, tempDir, waitFor } from "./harness.mjs";

const MEMBER = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "group-member.mjs");

let node;

before(async () => {
  // Event time, one-second windows; windows fire by the watermark (5 s behind) or by flush.
  node = await startNode(tempDir(), ["--window-size", "1s"]);
});

after(stopAll);

/** Events `first..first+count-1`, ten per one-second window, starting at second `first / 10`. */
function events(first, count, prefix) {
  return Array.from({ length: count }, (_, i) => ({
    id: `${prefix}-${first + i}`,
    timestamp: 1_700_000_000_000 + (first + i) * 100,
    payload: { n: first + i },
  }));
}

function assertDense(windows, from) {
  assert.deepEqual(
    windows.map((w) => w.seq),
    windows.map((_, i) => from + i),
    "seqs dense, in order, none twice",
  );
}

test("ingest and receive every window exactly once", async () => {
  const client = await connect({ nodes: [node.address] });
  try {
    const { emittedWindows } = await client.stats();
    const subscription = client.subscribe({ fromSeq: emittedWindows });
    await subscription.whenSubscribed();
    const sent = events(0, 500, "once");
    // Fifty ingests at once: pipelined up to the in-flight limit.
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => client.ingest(sent.slice(i * 10, i * 10 + 10))));
    assert.equal(results.reduce((n, r) => n + r.accepted, 0), 500);
    assert.equal(results.reduce((n, r) => n + r.duplicates + r.late, 0), 0);
    const flushed = await client.flush();
    const windows = await collect(subscription, (ws) => idsOf(ws).length >= 500);
    assertDense(windows, emittedWindows);
    assert.deepEqual(idsOf(windows).sort(), sent.map((e) => e.id).sort());
    assert.deepEqual(
      windows.flatMap((w) => w.payloads),
      windows.flatMap((w) => w.events).map((id) => ({ n: Number(id.split("-")[1]) })),
      "payloads come back with their events",
    );
    // What the subscriber saw ends with what flush returned.
    assert.deepEqual(flushed.map((w) => w.seq), windows.slice(-flushed.length).map((w) => w.seq));
    subscription.close();
  } finally {
    await client.end();
  }
});

test("a subscriber resumes after a lost connection without gaps or repeats", async () => {
  const client = await connect({ nodes: [node.address] });
  try {
    const { emittedWindows: from } = await client.stats();
    const subscription = client.subscribe({ fromSeq: from });
    await subscription.whenSubscribed();
    const seen = [];
    for (let round = 0; round < 6; round++) {
      const batch = events(10_000 + round * 30, 30, "resume");
      await client.ingest(batch);
      await client.flush();
      seen.push(...(await collect(subscription, (ws) => idsOf(ws).length >= 30)));
      if (round === 2) {
        // The connection dies under the subscriber; the next round's windows fire while it is
        // reconnecting.
        subscription.dropConnection();
      }
    }
    assertDense(seen, from);
    assert.equal(new Set(idsOf(seen)).size, idsOf(seen).length, "no event twice");
    assert.equal(idsOf(seen).length, 180);
    subscription.close();
  } finally {
    await client.end();
  }
});

test("a consumer group of three shares the windows; a SIGKILLed member's unacknowledged windows reach another with delivery 2", async () => {
  const client = await connect({ nodes: [node.address] });
  try {
    const { emittedWindows: from } = await client.stats();
    const group = `g${Date.now()}`;
    // Members 0 and 1 in this process; member 2 a child process that never acknowledges.
    const members = [0, 1].map(() => client.subscribeGroup(group, { maxUnacked: 4, fromSeq: from }));
    await Promise.all(members.map((m) => m.whenSubscribed()));
    const child = spawn(process.execPath, [MEMBER, node.address, group, "4", String(from)], { stdio: ["ignore", "pipe", "inherit"] });
    const held = [];
    let joined = false;
    createInterface({ input: child.stdout }).on("line", (line) => {
      const message = JSON.parse(line);
      if (message.joined) joined = true;
      else held.push(message);
    });
    try {
      await waitFor("the child member to join", () => joined, 10_000);
      // Thirty windows of one event each.
      const count = 30;
      await client.ingest(Array.from({ length: count }, (_, i) => ({ id: `g-${i}`, timestamp: 1_710_000_000_000 + i * 1000 })));
      await client.flush();

      // The child takes windows (up to 4 unacknowledged) and is SIGKILLed holding them.
      await waitFor("the child to hold two windows", () => held.length >= 2, 10_000);
      await killed(child);
      await runRemaining(count);
    } finally {
      await killed(child);
    }

    async function runRemaining(count) {
      // Members 0 and 1 acknowledge everything they get until every window is acknowledged.
      const acked = new Map();
      const received = [];
      await Promise.all(
        [0, 1].map(async (k) => {
          const deadline = Date.now() + 15_000;
          let pending = members[k].next();
          while (acked.size < count) {
            if (Date.now() > deadline) throw new Error(`member ${k}: acked ${acked.size} of ${count}`);
            let timer;
            const next = await Promise.race([pending, new Promise((r) => (timer = setTimeout(() => r(null), 200)))]);
            clearTimeout(timer);
            if (next === null) continue;
            pending = members[k].next();
            const window = next.value;
            received.push({ member: k, seq: window.seq, delivery: window.delivery });
            await window.ack();
            assert.ok(!acked.has(window.seq), `seq ${window.seq} acknowledged twice`);
            acked.set(window.seq, window);
          }
        }),
      );
      assert.deepEqual([...acked.keys()].sort((a, b) => a - b), Array.from({ length: count }, (_, i) => from + i));
      assert.ok(new Set(received.map((r) => r.member)).size === 2, "both remaining members took windows");
      for (const window of held) {
        const again = acked.get(window.seq);
        assert.equal(again.delivery, 2, `seq ${window.seq} handed out again with delivery 2`);
        assert.deepEqual(again.events, window.events);
      }
      const firstTime = new Set(received.filter((r) => r.delivery === 1).map((r) => r.seq));
      for (const r of received.filter((r) => r.delivery > 1)) {
        assert.ok(!firstTime.has(r.seq), `seq ${r.seq} redelivered although a remaining member had it`);
      }
    }
    members.forEach((m) => m.close());
  } finally {
    await client.end();
  }
});

test("an event JSON cannot carry fails its ingest only; the in-flight slot is given back", async () => {
  // One slot: a failed ingest that kept it would leave every later ingest waiting.
  const client = await connect({ nodes: [node.address], maxInFlight: 1 });
  try {
    const cycle = {};
    cycle.self = cycle;
    await assert.rejects(client.ingest([{ id: 1n, timestamp: 0 }]), TypeError);
    await assert.rejects(client.ingest([{ id: "cycle", timestamp: 0, payload: cycle }]), TypeError);
    const result = await client.ingest([{ id: "after-bigint", timestamp: 1_720_000_000_000 }]);
    assert.equal(result.accepted, 1);
  } finally {
    await client.end();
  }
});

test("a bad event is refused whole with a typed error carrying code 12", async () => {
  const client = await connect({ nodes: [node.address] });
  try {
    await assert.rejects(
      client.ingest([{ id: "ok", timestamp: 0 }, { id: [3], timestamp: 0 }]),
      (error) => error instanceof WindowNodeError && error.code === ErrorCode.Malformed && /events\[1\]\.id/.test(error.message),
    );
    await assert.rejects(
      client.ingest([{ id: "bad-time", timestamp: "2024-01-15 10:00:10Z" }]),
      (error) => error instanceof WindowNodeError && error.code === 12 && !error.retryable,
    );
    await assert.rejects(
      client.close("window-1"),
      (error) => error instanceof WindowNodeError && error.code === ErrorCode.NotOpen,
    );
    const badGroup = client.subscribeGroup("not a name");
    await assert.rejects(badGroup.whenSubscribed(), (error) => error instanceof WindowNodeError && error.code === 12);
    await assert.rejects(badGroup.next(), (error) => error instanceof WindowNodeError && error.code === 12);
    // The client goes on after errors.
    const result = await client.ingest([{ id: "after-errors", timestamp: 1_720_000_000_000 }]);
    assert.equal(result.accepted, 1);
  } finally {
    await client.end();
  }
});
