import { randomUUID } from "node:crypto";
import { ErrorCode, WindowNodeError } from "./errors.js";
import { Requests } from "./requests.js";
import { Subscription } from "./subscription.js";
import { camelCase, windowOf, type GroupWindow, type IngestResult, type Stats, type Window, type WindowEvent } from "./types.js";
import type { Message, Rotation } from "./wire.js";

/** Options of {@link connect}. */
export interface ConnectOptions {
  /** `HOST:PORT` of every node of one pipeline (one `--data-dir` or Redis namespace). */
  nodes: readonly string[];
  /** Ingest requests sent and not yet answered, at most (default 16); more wait for a slot. */
  maxInFlight?: number;
  /** How long one connection attempt may take (default 1000 ms). */
  connectTimeoutMs?: number;
  /**
   * How long to keep trying the nodes of the list after a loss before a request (or a
   * subscription) fails with error 11 (default 30000 ms).
   */
  failoverTimeoutMs?: number;
  /** Prefix of this client's request ids (default: a random UUID). */
  clientId?: string;
}

/** Options of {@link Client.subscribe}. */
export interface SubscribeOptions {
  /** Start at this seq of the durable log (resume with one past the last seq you have); without it, only new windows. */
  fromSeq?: number;
}

/** Options of {@link Client.subscribeGroup}. */
export interface GroupOptions {
  /** Windows this member may hold unacknowledged (the daemon's default is 1000). */
  maxUnacked?: number;
  /** Where a new group starts (ignored when the group exists); default: the next window fired. */
  fromSeq?: number;
}

/**
 * Connects to the first node of `options.nodes` that answers. Requests go to one node at a
 * time; after a lost connection or error 11 they are sent again to the next node of the list,
 * each with its `request_id`, so every request takes effect once.
 */
export async function connect(options: ConnectOptions): Promise<Client> {
  const client = new Client(options);
  await client.requests.open();
  return client;
}

export class Client {
  /** @internal */
  readonly requests: Requests;
  private readonly rotation: Rotation;
  private readonly clientId: string;
  private nextRequest = 1;
  private readonly maxInFlight: number;
  private inFlight = 0;
  private readonly slotWaiters: Array<() => void> = [];
  private readonly inFlightDone = new Set<Promise<unknown>>();
  private readonly subscriptions = new Set<Subscription<Window>>();
  private subscriptionStart = 0;
  private ended = false;

  /** Use {@link connect}. */
  constructor(options: ConnectOptions) {
    if (!Array.isArray(options.nodes) || options.nodes.length === 0) {
      throw new TypeError("connect: nodes must list at least one HOST:PORT");
    }
    this.rotation = {
      nodes: [...options.nodes],
      connectTimeoutMs: options.connectTimeoutMs ?? 1000,
      failoverTimeoutMs: options.failoverTimeoutMs ?? 30_000,
    };
    this.maxInFlight = Math.max(1, options.maxInFlight ?? 16);
    this.clientId = options.clientId ?? randomUUID();
    this.requests = new Requests(this.rotation);
  }

  /** The node the request connection is on now. */
  get address(): string | undefined {
    return this.requests.address;
  }

  /**
   * Ingests events; resolves once they are durable. Up to `maxInFlight` ingests are pipelined;
   * more wait for a slot. Each carries a fresh `request_id`, so the resend after a failover is
   * answered from the daemon's record instead of being applied twice.
   */
  async ingest(events: readonly WindowEvent[]): Promise<IngestResult> {
    this.checkOpen("ingest");
    while (this.inFlight >= this.maxInFlight) {
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
    }
    this.inFlight++;
    const sent = this.requests.request("ingest", { request_id: this.requestId(), events });
    this.inFlightDone.add(sent);
    try {
      const reply = await sent;
      return { accepted: reply.accepted as number, duplicates: reply.duplicates as number, late: reply.late as number };
    } finally {
      this.inFlightDone.delete(sent);
      this.inFlight--;
      this.slotWaiters.shift()?.();
    }
  }

  /** Fires every open window now (or those ending at or before `until`); resolves with them. */
  async flush(options: { until?: string | number } = {}): Promise<Window[]> {
    this.checkOpen("flush");
    const fields: Record<string, unknown> = { request_id: this.requestId() };
    if (options.until !== undefined) fields.until = options.until;
    const reply = await this.requests.request("flush", fields);
    return (reply.windows as Message[]).map(windowOf);
  }

  /** Fires one open window now; resolves with it. Error 20 when it is not open. */
  async close(windowId: string, options: { windowSizeMs?: number; key?: string } = {}): Promise<Window> {
    this.checkOpen("close");
    const fields: Record<string, unknown> = { request_id: this.requestId(), window_id: windowId };
    if (options.windowSizeMs !== undefined) fields.window_size_ms = options.windowSizeMs;
    if (options.key !== undefined) fields.key = options.key;
    return windowOf(await this.requests.request("close", fields));
  }

  /** The coordinator's counters and settings (`config`), keys in camelCase. */
  async stats(): Promise<Stats> {
    this.checkOpen("stats");
    const reply = await this.requests.request("stats", {});
    const { type: _type, inReplyTo: _inReplyTo, ...rest } = camelCase(reply) as Record<string, unknown>;
    return rest as unknown as Stats;
  }

  /**
   * Every fired window with `seq >= fromSeq` (only new ones without it), in seq order, on a
   * connection of its own. After a lost connection it resumes on the next node from the next
   * seq: no gap, and no seq is yielded twice.
   */
  subscribe(options: SubscribeOptions = {}): Subscription<Window> {
    this.checkOpen("subscribe");
    return this.track(new Subscription<Window>(this.rotation, this.nextStart(), { kind: "all", fromSeq: options.fromSeq }));
  }

  /**
   * Joins consumer group `name`: each fired window goes to exactly one member; `ack()` each.
   * A window this member holds unacknowledged when its connection ends goes to another member
   * (with `delivery` raised); after a loss the member joins again on the next node.
   */
  subscribeGroup(name: string, options: GroupOptions = {}): Subscription<GroupWindow> {
    this.checkOpen("subscribe");
    const subscription = new Subscription<GroupWindow>(this.rotation, this.nextStart(), {
      kind: "group",
      group: name,
      maxUnacked: options.maxUnacked,
      fromSeq: options.fromSeq,
    });
    this.track(subscription as unknown as Subscription<Window>);
    return subscription;
  }

  /** Waits for the ingests in flight, then closes every connection of this client. */
  async end(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    await Promise.allSettled([...this.inFlightDone]);
    for (const subscription of this.subscriptions) subscription.close();
    this.requests.end();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.end();
  }

  private track<W extends Window>(subscription: Subscription<W>): Subscription<W> {
    this.subscriptions.add(subscription as unknown as Subscription<Window>);
    return subscription;
  }

  /** Subscriptions start on the node the requests use, so a one-node list behaves simply. */
  private nextStart(): number {
    const address = this.requests.address;
    const index = address === undefined ? this.subscriptionStart : this.rotation.nodes.indexOf(address);
    return Math.max(0, index);
  }

  private requestId(): string {
    return `${this.clientId}-${this.nextRequest++}`;
  }

  private checkOpen(request: string): void {
    if (this.ended) throw new WindowNodeError(ErrorCode.Unavailable, "the client was ended", request);
  }
}
