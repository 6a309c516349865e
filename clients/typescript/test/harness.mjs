// Real `window-node serve` processes for the tests: free loopback ports, temp data dirs, bounded
// waits. Every process started here is SIGKILLed by stopAll() (called from each file's `after`).

import { spawn, spawnSync } from "node:child_process";
import { createServer } from "node:net";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

/** The daemon binary: $WINDOW_NODE_BIN, else the workspace's debug build. */
export const BIN = process.env.WINDOW_NODE_BIN ?? resolve(here, "../../../target/debug/window-node");

const started = [];
const dirs = [];

export function tempDir() {
  const dir = mkdtempSync(join(tmpdir(), "window-node-ts-"));
  dirs.push(dir);
  return dir;
}

/**
 * Starts `window-node serve --listen 127.0.0.1:0 --data-dir DIR ARGS...` and resolves once it
 * logs its address. Returns { child, address, stderr(), kill() }.
 */
export function startNode(dataDir, args = [], timeoutMs = 15_000) {
  return startServe(["--data-dir", dataDir, ...args], timeoutMs);
}

/**
 * Starts `window-node serve --listen 127.0.0.1:0 ARGS...` (a store of its own in ARGS: a
 * `--store redis://...`, say) and resolves once it logs its address, as {@link startNode}.
 */
export function startServe(args, timeoutMs = 15_000) {
  if (!existsSync(BIN)) {
    throw new Error(`no window-node binary at ${BIN}: run \`cargo build -p window-node\` at the repo root or set WINDOW_NODE_BIN`);
  }
  const child = spawn(BIN, ["serve", "--listen", "127.0.0.1:0", ...args], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, NO_COLOR: "1", RUST_LOG: process.env.RUST_LOG ?? "info" },
  });
  started.push(child);
  let log = "";
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`window-node did not log its address within ${timeoutMs} ms; stderr:\n${log}`));
    }, timeoutMs);
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      const before = log.length === 0 || !/address=/.test(log);
      log += chunk;
      if (log.length > 1 << 20) log = log.slice(-(1 << 19));
      const match = /listening.*?address=([0-9.]+:\d+)/.exec(log);
      if (before && match) {
        clearTimeout(timer);
        resolvePromise({
          child,
          address: match[1],
          stderr: () => log,
          kill: () => killed(child),
        });
      }
    });
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`window-node exited (${code ?? signal}) before listening; stderr:\n${log}`));
    });
  });
}

/** SIGKILLs a child and resolves once it is gone. */
export function killed(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolvePromise) => {
    child.once("exit", () => resolvePromise());
    child.kill("SIGKILL");
  });
}

/** Kills everything started here and removes the temp dirs. */
export async function stopAll() {
  await Promise.all(started.splice(0).map(killed));
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** Polls `check` (sync or async) every `everyMs` until it returns a truthy value; throws after `timeoutMs`. */
export async function waitFor(what, check, timeoutMs = 10_000, everyMs = 20) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Takes windows from an async iterator until `done(windows)` says so, with a bound: rejects
 * after `timeoutMs` naming what was received.
 */
export async function collect(iterator, done, timeoutMs = 15_000) {
  const windows = [];
  const deadline = Date.now() + timeoutMs;
  while (!done(windows)) {
    const left = deadline - Date.now();
    let timer;
    const result = await Promise.race([
      iterator.next(),
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`timed out after ${timeoutMs} ms; got ${windows.length} windows, seqs ${windows.map((w) => w.seq).join(",")}`)),
          Math.max(0, left),
        );
      }),
    ]);
    clearTimeout(timer);
    if (result.done) throw new Error(`subscription ended after ${windows.length} windows`);
    windows.push(result.value);
  }
  return windows;
}

/** The ids of every event of `windows`, in order. */
export function idsOf(windows) {
  return windows.flatMap((w) => w.events);
}

/** A free loopback port (bound, then let go). */
export function freePort() {
  return new Promise((resolvePromise, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePromise(port));
    });
  });
}

/**
 * A `redis-server` on a free loopback port with no persistence, SIGKILLed by stopAll(); `null`
 * when redis-server is not installed (the caller skips, saying so).
 */
export async function startRedis(timeoutMs = 10_000) {
  if (spawnSync("redis-server", ["--version"]).error) return null;
  const port = await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  started.push(child);
  let log = "";
  await new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server did not start within ${timeoutMs} ms:\n${log}`)), timeoutMs);
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk) => {
      log += chunk;
      if (/Ready to accept connections/.test(log)) {
        clearTimeout(timer);
        resolvePromise();
      }
    });
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited (${code ?? signal}):\n${log}`));
    });
  });
  return { url: `redis://127.0.0.1:${port}`, child };
}
