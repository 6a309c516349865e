// DistributedTimeWindow: three Node processes push into the same windows of one daemon
// (`--time ingest`); every element reaches exactly one tick, also when one of the processes is
// SIGKILLed after its pushes resolved. And the settings check at start.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { DistributedTimeWindow } from "window-node-client";
import { killed, startNode, stopAll, tempDir, waitFor } from "./harness.mjs";

const CHILD = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "dtw-child.mjs");
const children = [];

let node;

before(async () => {
  node = await startNode(tempDir(), ["--time", "ingest", "--window-size", "2s"]);
});

after(async () => {
  await Promise.all(children.map(killed));
  await stopAll();
});

/** A child process running one DistributedTimeWindow; its stdout messages are collected. */
function child(name, group) {
  const proc = spawn(process.execPath, [CHILD, name, node.address, group, "2"], { stdio: ["pipe", "pipe", "inherit"] });
  children.push(proc);
  const messages = [];
  createInterface({ input: proc.stdout }).on("line", (line) => {
    const message = JSON.parse(line);
    messages.push(message);
    proc.emit("message-line", message);
  });
  return { name, proc, messages, send: (line) => proc.stdin.write(line + "\n") };
}

test("three processes push into the same windows; each element reaches exactly one tick, also when one is SIGKILLed", async () => {
  const group = `dtw-${Date.now()}`;
  const [a, b, c] = ["a", "b", "c"].map((name) => child(name, group));
  await waitFor("three ready processes", () => [a, b, c].every((p) => p.messages.some((m) => m.ready)), 15_000);

  // Round 0: all three push 100 elements each; c is SIGKILLed the moment its pushes resolved,
  // before the window they went into fires.
  let cKilled;
  c.proc.on("message-line", (message) => {
    if (message.pushed) cKilled = killed(c.proc);
  });
  for (const p of [a, b, c]) p.send("go 100");
  await waitFor("round 0 pushed", () => [a, b].every((p) => p.messages.filter((m) => m.pushed).length === 1) && cKilled !== undefined, 15_000);
  await cKilled;
  const cTicksBeforeKill = c.messages.filter((m) => m.tick).length;

  // Round 1: the two survivors push again.
  for (const p of [a, b]) p.send("go 100");
  await waitFor("round 1 pushed", () => [a, b].every((p) => p.messages.filter((m) => m.pushed).length === 2), 15_000);

  const expected = new Set();
  for (const name of ["a", "b", "c"]) for (let i = 0; i < 100; i++) expected.add(`${name}-0-${i}`);
  for (const name of ["a", "b"]) for (let i = 0; i < 100; i++) expected.add(`${name}-1-${i}`);

  const ticked = () => [a, b, c].flatMap((p) => p.messages.filter((m) => m.tick).flatMap((m) => m.tick.flat().map((element) => ({ element, by: p.name }))));
  await waitFor("every element ticked", () => ticked().length >= expected.size, 15_000);

  const all = ticked();
  const counts = new Map();
  for (const { element } of all) counts.set(element, (counts.get(element) ?? 0) + 1);
  const twice = [...counts].filter(([, n]) => n > 1).map(([e]) => e);
  assert.deepEqual(twice, [], "no element ticked twice");
  assert.deepEqual([...counts.keys()].sort(), [...expected].sort(), "every element ticked");
  assert.equal(cTicksBeforeKill, c.messages.filter((m) => m.tick).length);
  const cRound0 = all.filter(({ element }) => element.startsWith("c-0-"));
  assert.ok(cRound0.every(({ by }) => by !== "c"), "the killed process's elements were ticked by the survivors");
  // The three processes pushed into shared windows: some tick holds elements of several.
  assert.ok(
    [a, b, c].some((p) => p.messages.some((m) => m.tick && m.tick.some((w) => new Set(w.map((e) => e[0])).size > 1))),
    "a window held elements of several processes",
  );

  for (const p of [a, b]) p.send("close");
  await waitFor("survivors closed", () => [a, b].every((p) => p.proc.exitCode === 0), 10_000);
});

test("pushes resolve once durable and a window fires by count and by time, ticked in this process", async () => {
  const countNode = await startNode(tempDir(), ["--time", "ingest", "--window-size", "2s", "--max-events", "10"]);
  const ticks = [];
  const window = new DistributedTimeWindow(10, 2, { nodes: [countNode.address], group: "solo" }, (payloads) => {
    ticks.push(payloads);
  });
  try {
    await window.ready();
    const elements = Array.from({ length: 35 }, (_, i) => ({ n: i }));
    await Promise.all(elements.map((e) => window.push(e)));
    await waitFor("35 elements ticked", () => ticks.flat(2).length >= 35, 10_000);
    // One inner array per window (windows received together come in one tick).
    const sizes = ticks.flat(1).map((w) => w.length);
    assert.deepEqual(sizes, [10, 10, 10, 5], "three windows fired by count, the rest by time");
    assert.deepEqual(ticks.flat(2).map((e) => e.n).sort((x, y) => x - y), elements.map((e) => e.n));
  } finally {
    await window.close();
  }
});

test("the settings check says exactly which serve options to use", async () => {
  const byCount = new DistributedTimeWindow(100, 2, { nodes: [node.address], group: "check" }, () => {});
  await assert.rejects(byCount.ready(), /window-node serve --time ingest --window-size 2s --max-events 100/);
  await byCount.close();
  const bySize = new DistributedTimeWindow(Number.MAX_SAFE_INTEGER, 10, { nodes: [node.address], group: "check" }, () => {});
  await assert.rejects(bySize.ready(), (error) => /--window-size 10s/.test(error.message) && !/--max-events/.test(error.message.split("but")[0]));
  await bySize.close();
  const eventTime = await startNode(tempDir(), ["--window-size", "2s"]);
  const wrongTime = new DistributedTimeWindow(Number.MAX_SAFE_INTEGER, 2, { nodes: [eventTime.address], group: "check" }, () => {});
  await assert.rejects(wrongTime.ready(), /--time event \(want --time ingest\)/);
  await assert.rejects(wrongTime.push("x"), /--time ingest/);
  await wrongTime.close();
});
