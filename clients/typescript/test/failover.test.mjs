// Three `serve` processes on one data dir; the holder is SIGKILLed mid-stream. The client, given
// the nodes list and connected to the holder itself, carries on: every acknowledged event is in
// exactly one window, the subscriber's seqs have no gap and no repeat.

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { connect, DistributedTimeWindow } from "window-node-client";
import { collect, idsOf, startNode, stopAll, tempDir, waitFor } from "./harness.mjs";

after(stopAll);

test("the holder is SIGKILLed mid-stream and nothing is lost or doubled, for clients on the holder and on a follower", async () => {
  const dir = tempDir();
  // Lateness well beyond the stream's 40 s of event time: the two clients' batches race each
  // other, and none may count as late.
  const args = ["--window-size", "1s", "--allowed-lateness", "120s", "--idle-timeout", "0s", "--failover-timeout", "10s"];
  const first = await startNode(dir, args);
  const probe = await connect({ nodes: [first.address] });
  await waitFor("the first node to hold the lease", async () => (await probe.stats()).leaseHolder === first.address);
  await probe.end();
  const followers = [await startNode(dir, args), await startNode(dir, args)];
  const nodes = [first.address, ...followers.map((f) => f.address)];

  const client = await connect({ nodes, maxInFlight: 4 });
  assert.equal(client.address, first.address, "the client starts on the holder itself");
  const subscription = client.subscribe({ fromSeq: 0 });
  await subscription.whenSubscribed();
  assert.equal(subscription.address, first.address);

  // 40 batches of 25 events, 40 ms apart in event time: a one-second window per batch.
  const batches = Array.from({ length: 40 }, (_, b) =>
    Array.from({ length: 25 }, (_, i) => ({ id: b * 25 + i, timestamp: 1_700_000_000_000 + (b * 25 + i) * 40 })),
  );
  // The first half, fired by a flush: the subscriber is mid-stream when the holder dies.
  const firstHalf = await Promise.all(batches.slice(0, 20).map((batch) => client.ingest(batch)));
  await client.flush();
  const before = await collect(subscription, (ws) => ws.length >= 3);
  // A second client on a follower (its requests are resent by the follower itself) sends the
  // second half's events again under key "f" and other ids.
  const onFollower = await connect({ nodes: [followers[1].address, followers[0].address, first.address], maxInFlight: 4 });
  assert.equal(onFollower.address, followers[1].address);
  // The second half is in flight when the holder dies.
  let resolved = 0;
  const secondHalf = batches.slice(20).map((batch) => client.ingest(batch).then((r) => (resolved++, r)));
  const viaFollower = batches
    .slice(20)
    .map((batch) => onFollower.ingest(batch.map((e) => ({ ...e, id: `f${e.id}`, key: "f" }))));
  await secondHalf[0];
  await first.kill();
  assert.ok(resolved < 20, `the holder died mid-stream (${resolved} of 20 ingests answered before)`);
  const ingests = [...firstHalf, ...secondHalf, ...viaFollower];
  const results = await Promise.all(ingests);
  assert.equal(results.reduce((n, r) => n + r.accepted, 0), 1500, "every event accepted once");
  assert.equal(onFollower.address, followers[1].address, "the client on a follower stayed there");
  await onFollower.end();
  assert.equal(results.reduce((n, r) => n + r.duplicates + r.late, 0), 0);
  assert.notEqual(client.address, first.address, "the client moved to another node");

  await client.flush();
  const windows = [...before, ...(await collect(subscription, (ws) => idsOf(before).length + idsOf(ws).length >= 1500, 20_000))];
  assert.deepEqual(windows.map((w) => w.seq), windows.map((_, i) => i), "seqs dense from 0, none twice");
  const ids = idsOf(windows);
  assert.deepEqual(ids.filter((id) => typeof id === "number").sort((a, b) => a - b), Array.from({ length: 1000 }, (_, i) => i), "every event exactly once");
  assert.deepEqual(ids.filter((id) => typeof id === "string").sort(), Array.from({ length: 500 }, (_, i) => `f${500 + i}`).sort(), "every event of the client on a follower exactly once");
  assert.ok(windows.some((w) => w.epoch === 2), "the new holder fired windows");
  assert.notEqual(subscription.address, first.address, "the subscriber moved to another node");
  const stats = await client.stats();
  assert.ok(followers.some((f) => f.address === stats.leaseHolder), "a follower holds the lease");
  await client.end();
});

test("DistributedTimeWindow carries on when the holder is SIGKILLed: no element lost", async () => {
  const dir = tempDir();
  const args = ["--time", "ingest", "--window-size", "1s", "--failover-timeout", "10s"];
  const first = await startNode(dir, args);
  const probe = await connect({ nodes: [first.address] });
  await waitFor("the first node to hold the lease", async () => (await probe.stats()).leaseHolder === first.address);
  await probe.end();
  const followers = [await startNode(dir, args), await startNode(dir, args)];
  const nodes = [first.address, ...followers.map((f) => f.address)];

  const ticked = [];
  const windows = ["x", "y"].map(
    (name) =>
      new DistributedTimeWindow(Number.MAX_SAFE_INTEGER, 1, { nodes, group: "failover" }, (payloads) => {
        for (const w of payloads) for (const element of w) ticked.push({ element, by: name });
      }),
  );
  await Promise.all(windows.map((w) => w.ready()));
  const pushed = [];
  const round = async (r) => {
    await Promise.all(
      windows.flatMap((w, k) =>
        Array.from({ length: 50 }, (_, i) => {
          const element = `${k}-${r}-${i}`;
          return w.push(element).then(() => pushed.push(element));
        }),
      ),
    );
  };
  await round(0);
  await round(1);
  // Round 2's pushes are in flight when the holder dies; they resolve through the followers.
  const inFlight = round(2);
  await first.kill();
  await inFlight;
  await round(3);
  assert.equal(pushed.length, 400);
  await waitFor("every pushed element ticked", () => pushed.every((e) => ticked.some((t) => t.element === e)), 15_000);
  // Exactly once, except for a window whose ack the dying holder had not made durable: that one
  // is handed out again (at least once). Report it rather than hide it.
  const counts = new Map();
  for (const { element } of ticked) counts.set(element, (counts.get(element) ?? 0) + 1);
  const again = [...counts].filter(([, n]) => n > 1).length;
  if (again > 0) console.log(`# ${again} elements ticked twice after the holder's death (acks not yet durable)`);
  assert.ok(again <= 200, "at most the windows around the kill are ticked again");
  await Promise.all(windows.map((w) => w.close()));
});
