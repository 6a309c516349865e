// node-apparatus's DistributedTimeWindow (over Redis, with the storage classes its readme shows)
// beside window-node-client's DistributedTimeWindow (over `window-node serve --time ingest`), the
// same measurements for either: `cargo xtask bench` runs this once per implementation, against
// one redis-server, and reads the JSON summary it prints on stdout (its log goes to stderr).
//
//   node dtw-bench.mjs --impl apparatus --redis redis://127.0.0.1:PORT --modules target/bench-apparatus [--quick]
//   node dtw-bench.mjs --impl window-node --nodes 127.0.0.1:PORT --client clients/typescript/dist/index.js [--quick]
//
// The parent starts Node child processes of this same script (`child` first), each holding one
// DistributedTimeWindow of the implementation, tells them on stdin what to push, and reads on
// their stdout what they pushed (and which pushes resolved) and what reached their tick. Every
// element is a unique string `PHASE:PROCESS:N:PUSH_MS`, so the parent counts, per phase, which
// elements reached a tick and how often (lost: a resolved push never ticked; duplicated: ticked
// more than once), and each tick's delay after its window's end.
//
// Phases (each with windows of its own: node-apparatus keys of its own, a consumer group of its
// own on our side):
// - throughput: one process, pushes awaited one at a time (1 in flight) for a few seconds, then
//   16 awaited at once; elements/s is resolved pushes over the time to the last one; then a flush
//   and every element must tick once.
// - latency: two processes, each pushing one element every LATENCY_EVERY_MS for a few windows;
//   the delay from a window's end (the end of the window its newest element was pushed in, by
//   this machine's clock, which is the daemon's too) to the tick that gets it.
// - kill_pusher: three processes pushing (4 in flight each); one is SIGKILLed while its pushes
//   are in flight; the others push on, then stop; every element whose push resolved must tick.
// - kill_in_tick: three processes pushing; the first to enter a tick with elements stays in it
//   (an awaited sleep) and is SIGKILLed there; the others push on, then stop.
// Skipped with --quick: latency and the kill phases (windows are 6 s at least: node-apparatus
// refuses timeoutInSeconds <= 5), and the throughput phases last 1 s instead of 3.
//
// Every wait is bounded; every child is killed when the parent ends.

import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";

const WINDOW_SECONDS = 6; // node-apparatus: "Param 'timeoutInSeconds' must be greater then 5 second"
const WINDOW_MS = WINDOW_SECONDS * 1000;
const COUNT_WINDOW_SIZE = Number.MAX_SAFE_INTEGER; // as the readme: no count-based tick
const LATENCY_EVERY_MS = 100;
const LATENCY_WINDOWS = 4;
const KILL_IN_FLIGHT = 4;

const log = (...parts) => process.stderr.write(`dtw-bench: ${parts.join(" ")}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function options(argv) {
  const out = { quick: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--quick") out.quick = true;
    else if (arg.startsWith("--")) out[arg.slice(2)] = argv[++i];
    else (out.positional ??= []).push(arg);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The implementations, behind one shape: { push(element), flush(), close() }, with `tick`
// called with the elements of the windows that fired (one inner array per window).

/** node-apparatus, with ExampleAccumulator and ExampleDistributedSortedSet as its readme writes them. */
async function apparatusWindow(opts, identity, tick) {
  const require = createRequire(join(resolve(opts.modules), "package.json"));
  const { DistributedTimeWindow } = require("node-apparatus");
  const { IORedisClientPool } = require("redis-abstraction");

  // The readme's ExampleAccumulator ("For multi-process implement this on Redis").
  class ExampleAccumulator {
    constructor(redisPool, identity) {
      this.redisPool = redisPool;
      this.identity = identity;
    }
    async add(value) {
      const token = this.redisPool.generateUniqueToken(this.identity);
      try {
        await this.redisPool.acquire(token);
        const values = Array.isArray(value) ? value : [value];
        return await this.redisPool.run(token, ["rpush", this.identity, ...values]);
      } finally {
        await this.redisPool.release(token);
      }
    }
    async drain(count) {
      const token = this.redisPool.generateUniqueToken(this.identity);
      try {
        await this.redisPool.acquire(token);
        return await this.redisPool.run(token, ["lpop", this.identity, count]);
      } finally {
        await this.redisPool.release(token);
      }
    }
    async flush() {
      const token = this.redisPool.generateUniqueToken(this.identity);
      try {
        await this.redisPool.acquire(token);
        const count = await this.redisPool.run(token, ["llen", this.identity]);
        if (count > 0) {
          return await this.redisPool.run(token, ["lpop", this.identity, count]);
        } else {
          return [];
        }
      } finally {
        await this.redisPool.release(token);
      }
    }
  }

  // The readme's ExampleDistributedSortedSet.
  class ExampleDistributedSortedSet {
    constructor(redisPool, identity) {
      this.redisPool = redisPool;
      this.identity = identity;
    }
    async add(key, sortId) {
      const token = this.redisPool.generateUniqueToken(this.identity);
      try {
        await this.redisPool.acquire(token);
        const insertCount = await this.redisPool.run(token, ["zadd", this.identity, sortId, key]);
        if (insertCount === 0) {
          return false;
        } else {
          return true;
        }
      } finally {
        await this.redisPool.release(token);
      }
    }
    async drain(sortId, operator) {
      if (operator !== "lt") {
        throw new Error("Invalid operator");
      }
      const token = this.redisPool.generateUniqueToken(this.identity);
      try {
        await this.redisPool.acquire(token);
        const members = await this.redisPool.run(token, ["zrangebyscore", this.identity, "-inf", `(${sortId}`]);
        const multiCommands = members.map((member) => ["zrem", this.identity, member]);
        if (multiCommands.length > 0) {
          const multiResponse = await this.redisPool.pipeline(token, multiCommands, true);
          const results = new Array();
          for (const [index, deleted] of multiResponse.entries()) {
            if (parseInt(deleted, 10) === 1) {
              results.push(members[index]);
            }
          }
          return results;
        } else {
          return [];
        }
      } finally {
        await this.redisPool.release(token);
      }
    }
    async flush() {
      const token = this.redisPool.generateUniqueToken(this.identity);
      try {
        await this.redisPool.acquire(token);
        const count = await this.redisPool.run(token, ["zcard", this.identity]);
        if (count > 0) {
          return await this.redisPool.run(token, ["zpopmin", this.identity, count]);
        } else {
          return [];
        }
      } finally {
        await this.redisPool.release(token);
      }
    }
  }

  // The readme's wiring: one pool of 2 idle connections, the sorted set and an accumulator per
  // bucket under one identity (shared by the processes, so they share the windows).
  const myIdentity = identity;
  const connectionInjector = () => IORedisClientPool.IORedisClientClusterFactory([opts.redis]);
  const redisPool = new IORedisClientPool(connectionInjector, 2);
  const dSortedSet = new ExampleDistributedSortedSet(redisPool, `${myIdentity}-sorted-set`);
  const accumulatorList = new Map();
  const accumulatorResolver = (identity) => {
    let existingAcc = accumulatorList.get(identity);
    if (existingAcc === undefined) {
      existingAcc = new ExampleAccumulator(redisPool, `${myIdentity}-accumulator` + identity);
      accumulatorList.set(identity, existingAcc);
    }
    return existingAcc;
  };
  const window = new DistributedTimeWindow(COUNT_WINDOW_SIZE, WINDOW_SECONDS, dSortedSet, accumulatorResolver, tick);
  return {
    push: (element) => window.push(element),
    // Its flush returns the windows instead of calling the callback: hand them to tick.
    flush: async () => {
      const windows = await window.flush();
      if (windows.length > 0) await tick(windows);
    },
    close: async () => {
      window[Symbol.dispose]();
      await redisPool.shutdown();
    },
  };
}

/** window-node-client's DistributedTimeWindow on the daemon; the phase's consumer group. */
async function windowNodeWindow(opts, identity, tick) {
  const { DistributedTimeWindow } = await import(pathToFileURL(resolve(opts.client)).href);
  const window = new DistributedTimeWindow(COUNT_WINDOW_SIZE, WINDOW_SECONDS, { nodes: opts.nodes.split(","), group: identity }, tick, {
    onError: (e) => log(`tick error: ${e}`),
  });
  await window.ready();
  return {
    push: (element) => window.push(element),
    flush: () => window.flush(),
    close: () => window.close(),
  };
}

// ---------------------------------------------------------------------------------------------
// A child: one DistributedTimeWindow, commands on stdin, JSON lines on stdout.

async function child(opts) {
  const say = (message) => process.stdout.write(JSON.stringify(message) + "\n");
  const { phase, name } = opts;
  let stall; // ms to stay in the next tick that has elements, when armed
  const tick = (payloads) => {
    const at = Date.now();
    const windows = payloads.filter((w) => Array.isArray(w) && w.length > 0);
    if (windows.length === 0) return undefined;
    // Each window's end: the end of the window its newest element of this phase was pushed in.
    const ends = windows.map((w) => {
      let newest = -1;
      for (const element of w) {
        const [p, , , ms] = String(element).split(":");
        if (p === phase && Number(ms) > newest) newest = Number(ms);
      }
      return newest < 0 ? null : newest - (newest % WINDOW_MS) + WINDOW_MS;
    });
    const report = () => say({ tick: windows, at, ends });
    if (stall !== undefined) {
      const ms = stall;
      stall = undefined;
      say({ inTick: windows.reduce((n, w) => n + w.length, 0) });
      // Reported only once the tick is over: a process killed in it never reports.
      return sleep(ms).then(report);
    }
    report();
    return undefined;
  };
  const make = opts.impl === "apparatus" ? apparatusWindow : windowNodeWindow;
  const window = await make(opts, opts.identity, tick);
  say({ ready: name });

  let n = 0;
  let stopping = false;
  let pushing;
  let acked = [];
  const flushAcks = () => {
    if (acked.length > 0) say({ acked });
    acked = [];
  };
  const run = async ({ inFlight, seconds, everyMs, reportAcks }) => {
    stopping = false;
    const started = performance.now();
    const deadline = started + seconds * 1000;
    let count = 0;
    let last = started;
    const ticker = reportAcks ? setInterval(flushAcks, 50) : undefined;
    const loop = async () => {
      while (!stopping && performance.now() < deadline) {
        const id = n++;
        const element = `${phase}:${name}:${id}:${Date.now()}`;
        await window.push(element);
        count++;
        last = performance.now();
        if (reportAcks) acked.push(id);
        if (everyMs > 0) await sleep(everyMs);
      }
    };
    await Promise.all(Array.from({ length: inFlight }, loop));
    if (ticker) clearInterval(ticker);
    flushAcks();
    say({ done: { pushed: count, seconds: (last - started) / 1000 } });
  };
  for await (const line of createInterface({ input: process.stdin })) {
    const command = JSON.parse(line);
    if (command.cmd === "push") pushing = run(command);
    else if (command.cmd === "stop") {
      stopping = true;
      await pushing;
    } else if (command.cmd === "arm") stall = command.stallMs;
    else if (command.cmd === "disarm") stall = undefined;
    else if (command.cmd === "flush") {
      await pushing;
      await window.flush();
      say({ flushed: true });
    } else if (command.cmd === "close") {
      await pushing;
      await window.close();
      say({ closed: true });
      break;
    }
  }
  process.exit(0);
}

// ---------------------------------------------------------------------------------------------
// The parent.

const script = fileURLToPath(import.meta.url);
const children = new Set();

/** Starts a child process; collects what it says. */
function start(opts, phase, identity, name) {
  const args = [script, "child", "--phase", phase, "--identity", identity, "--name", name];
  for (const key of ["impl", "redis", "modules", "nodes", "client"]) {
    if (opts[key] !== undefined) args.push(`--${key}`, opts[key]);
  }
  const proc = spawn(process.execPath, args, { stdio: ["pipe", "pipe", "inherit"] });
  children.add(proc);
  const c = { name, proc, ready: false, done: undefined, acked: [], ticks: [], inTick: undefined, exited: false, listeners: [] };
  proc.on("exit", () => {
    c.exited = true;
    children.delete(proc);
  });
  proc.stdin.on("error", () => {});
  createInterface({ input: proc.stdout }).on("line", (line) => {
    const m = JSON.parse(line);
    if (m.ready) c.ready = true;
    if (m.done) c.done = m.done;
    if (m.acked) c.acked.push(...m.acked);
    if (m.tick) c.ticks.push(m);
    if (m.inTick !== undefined) c.inTick = m.inTick;
    for (const f of c.listeners) f(m);
  });
  c.send = (command) => {
    if (!c.exited) c.proc.stdin.write(JSON.stringify(command) + "\n");
  };
  return c;
}

async function waitFor(what, condition, ms) {
  const until = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(5);
  }
}

function kill(c) {
  if (c.exited) return Promise.resolve();
  return new Promise((r) => {
    c.proc.once("exit", r);
    c.proc.kill("SIGKILL");
  });
}

/** Sleeps until this machine's clock is `from`..`to` ms into a window. */
async function alignTo(from, to) {
  for (let i = 0; i < 2 * WINDOW_MS; i++) {
    const at = Date.now() % WINDOW_MS;
    if (at >= from && at < to) return;
    await sleep(2);
  }
}

let phaseCounter = 0;
async function startPhase(opts, label, count) {
  const phase = `${label}${phaseCounter++}`;
  // Keys (node-apparatus) or the group (ours) of this phase alone.
  const identity = `bench-${process.pid}-${phase}`;
  const procs = Array.from({ length: count }, (_, i) => start(opts, phase, identity, String.fromCharCode(97 + i)));
  await waitFor(`${count} ready processes`, () => procs.every((c) => c.ready || c.exited), 30_000);
  if (procs.some((c) => c.exited)) throw new Error(`${phase}: a process exited before it was ready`);
  return { phase, procs };
}

/** What reached a tick: per element of the phase, how often; and each window's delay. */
function tally(phase, procs) {
  const counts = new Map();
  const delays = [];
  for (const c of procs) {
    for (const t of c.ticks) {
      t.tick.forEach((w, i) => {
        let mine = 0;
        for (const element of w) {
          const [p, name, n] = String(element).split(":");
          if (p !== phase) continue;
          mine++;
          const key = `${name}:${n}`;
          counts.set(key, (counts.get(key) ?? 0) + 1);
        }
        if (mine > 0 && t.ends[i] !== null) delays.push(t.at - t.ends[i]);
      });
    }
  }
  return { counts, delays };
}

function verdict(acked, counts) {
  let lost = 0;
  for (const key of acked) if (!counts.has(key)) lost++;
  let duplicated = 0;
  for (const n of counts.values()) if (n > 1) duplicated++;
  return { acked: acked.length, ticked: counts.size, lost, duplicated };
}

/** Waits until every element in `acked` ticked, or `ms` passed; then a moment for repeats. */
async function settle(phase, procs, acked, ms) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const { counts } = tally(phase, procs);
    if (acked.every((key) => counts.has(key))) break;
    await sleep(20);
  }
  await sleep(300);
}

async function closeAll(procs) {
  for (const c of procs) c.send({ cmd: "close" });
  await Promise.race([Promise.all(procs.map((c) => new Promise((r) => (c.exited ? r() : c.proc.once("exit", r))))), sleep(10_000)]);
  await Promise.all(procs.map(kill));
}

async function throughput(opts, inFlight, seconds) {
  const { phase, procs } = await startPhase(opts, `t${inFlight}x`, 1);
  const [c] = procs;
  c.send({ cmd: "push", inFlight, seconds, everyMs: 0, reportAcks: false });
  await waitFor(`${phase}: pushes done`, () => c.done !== undefined, seconds * 1000 + 60_000);
  const { pushed, seconds: took } = c.done;
  c.send({ cmd: "flush" });
  const acked = Array.from({ length: pushed }, (_, i) => `a:${i}`);
  await settle(phase, procs, acked, WINDOW_MS + 10_000);
  const { counts } = tally(phase, procs);
  await closeAll(procs);
  const out = { in_flight: inFlight, elements: pushed, seconds: took, per_s: pushed / took, ...verdict(acked, counts) };
  log(`${opts.impl} ${inFlight} in flight: ${pushed} elements in ${took.toFixed(3)} s = ${out.per_s.toFixed(0)}/s; lost ${out.lost}, duplicated ${out.duplicated}`);
  return out;
}

function percentile(sorted, q) {
  return sorted[Math.round((sorted.length - 1) * q)];
}

async function latency(opts) {
  const { phase, procs } = await startPhase(opts, "lat", 2);
  // Start just after a window's start; push through LATENCY_WINDOWS whole windows.
  await alignTo(50, 500);
  const seconds = (LATENCY_WINDOWS * WINDOW_MS - (Date.now() % WINDOW_MS) + 200) / 1000;
  for (const c of procs) c.send({ cmd: "push", inFlight: 1, seconds, everyMs: LATENCY_EVERY_MS, reportAcks: true });
  await waitFor(`${phase}: pushes done`, () => procs.every((c) => c.done), seconds * 1000 + 30_000);
  const acked = procs.flatMap((c) => c.acked.map((n) => `${c.name}:${n}`));
  // The last window ends within one window; node-apparatus drains it on its next timer tick
  // (every timeoutInSeconds / 2) at the latest.
  await settle(phase, procs, acked, WINDOW_MS + WINDOW_MS / 2 + 3000);
  const { counts, delays } = tally(phase, procs);
  await closeAll(procs);
  delays.sort((a, b) => a - b);
  const out = {
    windows: delays.length,
    every_ms: LATENCY_EVERY_MS,
    processes: procs.length,
    p50_ms: delays.length ? percentile(delays, 0.5) : null,
    p99_ms: delays.length ? percentile(delays, 0.99) : null,
    max_ms: delays.length ? delays[delays.length - 1] : null,
    delays_ms: delays,
    ...verdict(acked, counts),
  };
  log(`${opts.impl} latency: ${delays.length} windows, p50 ${out.p50_ms} ms, p99 ${out.p99_ms} ms (${delays.join(", ")})`);
  return out;
}

async function killPusher(opts) {
  const { phase, procs } = await startPhase(opts, "kp", 3);
  const [victim, ...rest] = procs;
  // Early in a window, so that the kill is far from its end.
  await alignTo(200, 1500);
  const seconds = 30;
  for (const c of procs) c.send({ cmd: "push", inFlight: KILL_IN_FLIGHT, seconds, everyMs: 0, reportAcks: true });
  await sleep(1000);
  const before = victim.acked.length;
  await kill(victim);
  log(`${opts.impl} kill_pusher: SIGKILLed process ${victim.name} with ${before} pushes resolved (and up to ${KILL_IN_FLIGHT} in flight)`);
  await sleep(1000);
  for (const c of rest) c.send({ cmd: "stop" });
  await waitFor(`${phase}: survivors stopped`, () => rest.every((c) => c.done), 30_000);
  const acked = procs.flatMap((c) => c.acked.map((n) => `${c.name}:${n}`));
  await settle(phase, procs, acked, WINDOW_MS + WINDOW_MS / 2 + 3000);
  const { counts } = tally(phase, procs);
  await closeAll(rest);
  const victimAcked = victim.acked.map((n) => `${victim.name}:${n}`);
  const out = { ...verdict(acked, counts), killed_acked: victimAcked.length, killed_lost: verdict(victimAcked, counts).lost };
  log(`${opts.impl} kill_pusher: ${out.acked} resolved pushes, ${out.lost} lost, ${out.duplicated} duplicated`);
  return out;
}

async function killInTick(opts) {
  const { phase, procs } = await startPhase(opts, "kt", 3);
  // Late in a window, so that its end (and the tick) comes soon.
  await alignTo(WINDOW_MS - 2500, WINDOW_MS - 1500);
  const stallMs = 3000;
  for (const c of procs) c.send({ cmd: "arm", stallMs });
  for (const c of procs) c.send({ cmd: "push", inFlight: KILL_IN_FLIGHT, seconds: 30, everyMs: 0, reportAcks: true });
  await waitFor(`${phase}: a process in its tick`, () => procs.some((c) => c.inTick !== undefined), WINDOW_MS + WINDOW_MS / 2 + 5000);
  const victim = procs.find((c) => c.inTick !== undefined);
  const rest = procs.filter((c) => c !== victim);
  // The others must tick normally from now on (one that was already in its stall reports after it).
  for (const c of rest) c.send({ cmd: "disarm" });
  await kill(victim);
  log(`${opts.impl} kill_in_tick: SIGKILLed process ${victim.name} inside its tick of ${victim.inTick} elements`);
  await sleep(1000);
  for (const c of rest) c.send({ cmd: "stop" });
  await waitFor(`${phase}: survivors stopped`, () => rest.every((c) => c.done), 30_000);
  const acked = procs.flatMap((c) => c.acked.map((n) => `${c.name}:${n}`));
  await settle(phase, procs, acked, WINDOW_MS + WINDOW_MS / 2 + stallMs + 3000);
  const { counts } = tally(phase, procs);
  await closeAll(rest);
  const out = { ...verdict(acked, counts), held_in_tick: victim.inTick };
  log(`${opts.impl} kill_in_tick: ${out.acked} resolved pushes, ${out.lost} lost, ${out.duplicated} duplicated`);
  return out;
}

async function parent(opts) {
  if (opts.impl !== "apparatus" && opts.impl !== "window-node") throw new Error("--impl apparatus | window-node");
  const seconds = opts.quick ? 1 : 3;
  const result = { impl: opts.impl, window_seconds: WINDOW_SECONDS, quick: opts.quick };
  result.throughput = [await throughput(opts, 1, seconds), await throughput(opts, 16, seconds)];
  if (!opts.quick) {
    result.latency = await latency(opts);
    result.kill_pusher = await killPusher(opts);
    result.kill_in_tick = await killInTick(opts);
  }
  process.stdout.write(JSON.stringify(result) + "\n");
}

const opts = options(process.argv.slice(2));
if (opts.positional?.[0] === "child") {
  child(opts).catch((e) => {
    log(`child ${opts.name}: ${e?.stack ?? e}`);
    process.exit(1);
  });
} else {
  const stopChildren = () => {
    for (const proc of children) proc.kill("SIGKILL");
  };
  process.on("exit", stopChildren);
  parent(opts).then(
    () => process.exit(0),
    (e) => {
      log(`error: ${e?.stack ?? e}`);
      stopChildren();
      process.exit(1);
    },
  );
}
