// node-apparatus's DistributedTimeWindow on window-node: the daemon keeps the elements (durably),
// fires the windows on its clock, and hands each window to exactly one process (a consumer
// group), so the sorted set and the accumulators of the original are not needed.

import { randomUUID } from "node:crypto";
import { Client, connect } from "./client.js";
import type { Subscription } from "./subscription.js";
import type { GroupWindow } from "./types.js";

/** Where the windows live: the daemon's nodes and the group whose members share the ticks. */
export interface DistributedTimeWindowConnection {
  /** `HOST:PORT` of the `window-node serve` processes of one pipeline. */
  nodes: readonly string[];
  /** Consumer group: each window is ticked in exactly one of the processes that use this name. */
  group: string;
}

/** Tuning, all optional. */
export interface DistributedTimeWindowOptions {
  /** Ingest requests in flight at once (default 4); pushes made meanwhile are coalesced. */
  maxInFlight?: number;
  /** Windows this process may hold unacknowledged (default 16). */
  maxUnacked?: number;
  /** Called when `tick` throws (default: console.error); the window is not acknowledged. */
  onError?: (error: unknown) => void;
  /** Passed on to the client (default 30000 ms). */
  failoverTimeoutMs?: number;
}

interface Waiting<T> {
  elements: T[];
  resolve(): void;
  reject(error: unknown): void;
}

export class DistributedTimeWindow<T> {
  private client: Client | undefined;
  private members: Subscription<GroupWindow> | undefined;
  private readonly started: Promise<void>;
  private readonly identity = randomUUID();
  private nextElement = 0;
  private waiting: Waiting<T>[] = [];
  private scheduled = false;
  private inFlight = 0;
  private readonly sending = new Set<Promise<void>>();
  private consuming: Promise<void> | undefined;
  /** The tick (and ack) in progress, which close() lets finish. */
  private busy: Promise<void> | undefined;
  private closing = false;
  /** Seqs ticked here lately: a window handed out again to this process is acknowledged, not ticked again. */
  private readonly ticked = new Set<string>();
  private readonly maxInFlight: number;

  /**
   * @param countWindowSize a window fires when it holds this many elements (the daemon's
   *   `--max-events`; `Number.MAX_SAFE_INTEGER` or more: no count limit, `--max-events` unset)
   * @param timeoutInSeconds window length (the daemon's `--window-size`, with `--time ingest`)
   * @param connection the daemon's nodes and the consumer group of the processes that tick
   * @param tick called with the elements of fired windows (one inner array per window: the
   *   windows received together), in exactly one process of the group per window; the windows
   *   are acknowledged after it returns
   */
  constructor(
    readonly countWindowSize: number,
    readonly timeoutInSeconds: number,
    readonly connection: DistributedTimeWindowConnection,
    private readonly tick: (payloads: T[][]) => unknown,
    private readonly options: DistributedTimeWindowOptions = {},
  ) {
    this.maxInFlight = Math.max(1, options.maxInFlight ?? 4);
    this.started = this.start();
    // Surfaced by push/flush/ready; not an unhandled rejection on its own.
    this.started.catch(() => {});
  }

  /** Resolves once connected and the daemon's settings are checked; rejects saying what to change. */
  ready(): Promise<void> {
    return this.started;
  }

  /**
   * Adds elements to the current window; resolves once they are durable in the daemon. Pushes
   * made while others are in flight travel together in one ingest.
   */
  push(element: T | T[]): Promise<void> {
    if (this.closing) return Promise.reject(new Error("DistributedTimeWindow: push after close()"));
    const elements = Array.isArray(element) ? element : [element];
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ elements, resolve, reject });
      this.schedule();
    });
  }

  /**
   * Makes every push so far durable, then fires every open window now (in the daemon, for all
   * the processes of the group); their ticks follow in whichever process each is handed to.
   */
  async flush(): Promise<void> {
    await this.started;
    await this.drainPushes();
    await this.client!.flush();
  }

  /**
   * Makes every push durable, lets a tick in progress finish and be acknowledged, and leaves
   * the group (windows handed here and not acknowledged go to the other processes).
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    try {
      await this.started;
    } catch {
      await this.client?.end();
      return;
    }
    await this.drainPushes();
    await this.busy;
    this.members?.close();
    await this.consuming;
    await this.client?.end();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private async start(): Promise<void> {
    const client = await connect({ nodes: this.connection.nodes, failoverTimeoutMs: this.options.failoverTimeoutMs });
    this.client = client;
    try {
      const { config } = await client.stats();
      const problems = checkConfig(config, this.countWindowSize, this.timeoutInSeconds);
      if (problems !== undefined) throw new Error(problems);
      const members = client.subscribeGroup(this.connection.group, { maxUnacked: this.options.maxUnacked ?? 16 });
      this.members = members;
      await members.whenSubscribed();
      this.consuming = this.consume(members);
    } catch (error) {
      await client.end();
      throw error;
    }
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // After the current turn, so that pushes made together go in one request.
    setImmediate(() => {
      this.scheduled = false;
      void this.send();
    });
  }

  private async send(): Promise<void> {
    try {
      await this.started;
    } catch (error) {
      const waiting = this.waiting;
      this.waiting = [];
      for (const w of waiting) w.reject(error);
      return;
    }
    while (this.waiting.length > 0 && this.inFlight < this.maxInFlight) {
      const batch = this.waiting;
      this.waiting = [];
      const events = batch.flatMap((w) => w.elements.map((payload) => ({ id: `${this.identity}-${this.nextElement++}`, payload })));
      this.inFlight++;
      const sent = this.client!.ingest(events).then(
        () => {
          for (const w of batch) w.resolve();
        },
        (error: unknown) => {
          for (const w of batch) w.reject(error);
        },
      );
      this.sending.add(sent);
      void sent.finally(() => {
        this.sending.delete(sent);
        this.inFlight--;
        if (this.waiting.length > 0) this.schedule();
      });
    }
  }

  private async drainPushes(): Promise<void> {
    while (this.waiting.length > 0 || this.sending.size > 0 || this.scheduled) {
      if (this.waiting.length > 0 && !this.scheduled) this.schedule();
      await Promise.race([...this.sending, new Promise((resolve) => setImmediate(() => resolve(undefined)))]);
    }
  }

  private async consume(members: Subscription<GroupWindow>): Promise<void> {
    try {
      for await (const window of members) {
        // Closing: a window not ticked yet is left to the other processes (it is handed out
        // again when this member's connection ends).
        if (this.closing) break;
        this.busy = this.handle(window, members);
        await this.busy;
        this.busy = undefined;
      }
    } catch (error) {
      if (!this.closing) this.report(error);
    }
  }

  /**
   * Ticks a window together with the windows already received behind it (one inner array per
   * window, as node-apparatus drains every due window at once), except those this process ticked
   * already, then acknowledges them all.
   */
  private async handle(first: GroupWindow, members: Subscription<GroupWindow>): Promise<void> {
    const windows = [first, ...members.takeBuffered()];
    const at = (window: GroupWindow) => `${window.partition ?? ""}:${window.seq}`;
    const fresh = windows.filter((window) => !this.ticked.has(at(window)));
    if (fresh.length > 0) {
      try {
        await this.tick(fresh.map((window) => (window.payloads ?? []) as T[]));
      } catch (error) {
        this.report(error);
        return;
      }
      for (const window of fresh) this.remember(at(window));
    }
    // A failed ack (connection lost, or the window handed to another member meanwhile) means
    // the window may be ticked once more elsewhere; nothing else to do here.
    await Promise.all(windows.map((window) => window.ack().catch(() => {})));
  }

  private report(error: unknown): void {
    (this.options.onError ?? ((e) => console.error("DistributedTimeWindow:", e)))(error);
  }

  private remember(at: string): void {
    this.ticked.add(at);
    if (this.ticked.size > 10_000) {
      const oldest = this.ticked.values().next().value as string;
      this.ticked.delete(oldest);
    }
  }
}

/** What to change in the daemon's options, or undefined when they match. */
function checkConfig(
  config: { time: string; windowSizeMs: number; maxEvents: number | null } | undefined,
  countWindowSize: number,
  timeoutInSeconds: number,
): string | undefined {
  if (config === undefined) {
    return "DistributedTimeWindow: the daemon did not report its settings in stats (config); run a window-node that does";
  }
  const wantSize = Math.round(timeoutInSeconds * 1000);
  const unlimited = !Number.isFinite(countWindowSize) || countWindowSize >= Number.MAX_SAFE_INTEGER;
  const wantMax = unlimited ? null : countWindowSize;
  const mismatches: string[] = [];
  if (config.time !== "ingest") mismatches.push(`--time ${config.time} (want --time ingest)`);
  if (config.windowSizeMs !== wantSize) mismatches.push(`window size ${config.windowSizeMs} ms (want --window-size ${wantSize % 1000 === 0 ? `${wantSize / 1000}s` : `${wantSize}ms`} for timeoutInSeconds ${timeoutInSeconds})`);
  if (config.maxEvents !== wantMax) {
    mismatches.push(
      wantMax === null
        ? `--max-events ${config.maxEvents} (want no --max-events: countWindowSize ${countWindowSize} means no count limit)`
        : `max events ${config.maxEvents ?? "unset"} (want --max-events ${wantMax} for countWindowSize ${countWindowSize})`,
    );
  }
  if (mismatches.length === 0) return undefined;
  const size = wantSize % 1000 === 0 ? `${wantSize / 1000}s` : `${wantSize}ms`;
  const flags = ["--time ingest", `--window-size ${size}`];
  if (wantMax !== null) flags.push(`--max-events ${wantMax}`);
  return `DistributedTimeWindow(${countWindowSize}, ${timeoutInSeconds}) needs the daemon started as \`window-node serve ${flags.join(" ")} ...\`, but it runs with ${mismatches.join("; ")}`;
}
