// Subscriptions: each on a connection of its own (a subscribed connection only streams),
// resumed on the next node of the list after a loss.

import { ErrorCode, WindowNodeError } from "./errors.js";
import { windowOf, type GroupWindow, type Window } from "./types.js";
import { connectAny, errorOf, sleep, type Line, type Message, type Rotation } from "./wire.js";

/** Windows buffered before the socket is paused (the daemon keeps the rest in its log). */
const HIGH_WATER = 1024;

/** What a subscription subscribes to. */
export type Target =
  | { kind: "all"; fromSeq?: number }
  | { kind: "group"; group: string; maxUnacked?: number; fromSeq?: number };

/**
 * An async iterator of fired windows. Ends (`return`, `break` out of `for await`, `close()`)
 * close its connection.
 */
export class Subscription<W extends Window = Window> implements AsyncIterableIterator<W> {
  private line: Line | undefined;
  /** The connection whose `subscribe_ok` came: acks wait for it (a member must join first). */
  private joined: Line | undefined;
  private index: number;
  private readonly queue: W[] = [];
  /** Callers of next() waiting for a window, first come first served. */
  private readonly waiters: Array<{ resolve(result: IteratorResult<W>): void; reject(error: unknown): void }> = [];
  private failure: unknown;
  private closed = false;
  private paused = false;
  /** The next seq not yet received (plain subscriptions); undefined until the daemon says. */
  private nextUnseen: number | undefined;
  /** With `--partitions`: the next seq not yet received of each partition. */
  private nextByPartition: number[] | undefined;
  /** The current connection's acks in flight, by msg_id. */
  private readonly acks = new Map<number, { resolve(): void; reject(error: WindowNodeError): void; seq: number }>();
  private nextMsgId = 2;
  private readonly ready: Promise<void>;
  private readyResolve!: () => void;
  private readyReject!: (error: unknown) => void;
  private started = false;

  constructor(
    private readonly rotation: Rotation,
    start: number,
    private readonly target: Target,
  ) {
    this.index = start;
    this.nextUnseen = target.fromSeq;
    this.ready = new Promise((resolve, reject) => {
      this.readyResolve = resolve;
      this.readyReject = reject;
    });
    this.ready.catch(() => {});
    void this.connect();
  }

  /** Resolves once the first `subscribe_ok` came (the subscription is in place). */
  whenSubscribed(): Promise<void> {
    return this.ready;
  }

  /**
   * Where the subscription resumes after a reconnect (plain subscriptions): one past the last
   * seq received, or with `--partitions` one such number per partition.
   */
  get nextSeq(): number | number[] | undefined {
    return this.nextByPartition !== undefined ? [...this.nextByPartition] : this.nextUnseen;
  }

  /** The address of the node currently streaming, if any. */
  get address(): string | undefined {
    return this.line?.address;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<W>> {
    const window = this.queue.shift();
    if (window !== undefined) {
      if (this.paused && this.queue.length < HIGH_WATER / 2) {
        this.paused = false;
        this.line?.resume();
      }
      return Promise.resolve({ value: window, done: false });
    }
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.closed) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
    });
  }

  /** Windows already received and not yet taken by `next()`, taken now (without waiting). */
  takeBuffered(): W[] {
    return this.queue.splice(0, this.queue.length);
  }

  async return(): Promise<IteratorResult<W>> {
    this.close();
    return { value: undefined, done: true };
  }

  /** Closes the connection; a group member's unacknowledged windows go to other members. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.line?.destroy();
    this.readyReject(new WindowNodeError(ErrorCode.Unavailable, "the subscription was closed"));
    for (const ack of this.acks.values()) {
      ack.reject(new WindowNodeError(ErrorCode.Unavailable, "the subscription was closed", "ack"));
    }
    this.acks.clear();
    this.wake();
  }

  /** Drops the current connection as a crash would (tests); the subscription reconnects. */
  dropConnection(): void {
    this.line?.destroy();
  }

  private async connect(): Promise<void> {
    while (!this.closed) {
      try {
        const { line, index } = await connectAny(
          this.rotation,
          this.index,
          (message, line) => this.receive(line, message),
          (line) => this.lost(line),
          () => this.closed,
        );
        this.line = line;
        this.index = index;
        if (this.closed) {
          line.destroy();
          return;
        }
        line.send(this.subscribeBody());
        return;
      } catch (error) {
        this.fail(error);
        return;
      }
    }
  }

  private subscribeBody(): Record<string, unknown> {
    const body: Record<string, unknown> = { type: "subscribe", msg_id: 1 };
    if (this.target.kind === "group") {
      body.group = this.target.group;
      if (this.target.maxUnacked !== undefined) body.max_unacked = this.target.maxUnacked;
      // Only a new group starts at from_seq; after the first subscribe_ok it is the group's.
      if (!this.started && this.target.fromSeq !== undefined) body.from_seq = this.target.fromSeq;
    } else if (this.nextByPartition !== undefined) {
      body.from_seq = this.nextByPartition;
    } else if (this.nextUnseen !== undefined) {
      body.from_seq = this.nextUnseen;
    }
    return body;
  }

  private receive(line: Line, message: Message): void {
    if (line !== this.line) return;
    switch (message.type) {
      case "subscribe_ok": {
        if (this.target.kind === "all") {
          if (Array.isArray(message.from_seq)) {
            // Partitions: each has its own dense seq.
            this.nextByPartition ??= (message.from_seq as number[]).slice();
          } else if (this.nextUnseen === undefined && typeof message.from_seq === "number") {
            this.nextUnseen = message.from_seq;
          }
        }
        this.started = true;
        this.joined = line;
        this.readyResolve();
        return;
      }
      case "window_closed": {
        const window = windowOf(message);
        if (this.target.kind === "all") {
          // Resumed subscriptions start at `next`; anything before it was yielded already.
          if (window.partition !== undefined && this.nextByPartition !== undefined) {
            const next = this.nextByPartition[window.partition] ?? 0;
            if (window.seq < next) return;
            this.nextByPartition[window.partition] = window.seq + 1;
          } else {
            if (this.nextUnseen !== undefined && window.seq < this.nextUnseen) return;
            this.nextUnseen = window.seq + 1;
          }
          this.push(window as W);
        } else {
          const seq = window.seq;
          const groupWindow = window as GroupWindow;
          groupWindow.delivery = window.delivery ?? 1;
          const partition = window.partition;
          groupWindow.ack = () => this.ack(seq, partition);
          this.push(groupWindow as unknown as W);
        }
        return;
      }
      case "ack_ok": {
        const ack = this.acks.get(message.in_reply_to as number);
        if (ack !== undefined) {
          this.acks.delete(message.in_reply_to as number);
          ack.resolve();
        }
        return;
      }
      case "error": {
        const inReplyTo = message.in_reply_to;
        const ack = typeof inReplyTo === "number" ? this.acks.get(inReplyTo) : undefined;
        if (ack !== undefined) {
          this.acks.delete(inReplyTo as number);
          ack.reject(errorOf(message, "ack"));
          return;
        }
        if (message.code === ErrorCode.Unavailable) {
          // Fell behind, or the node cannot serve now: resume on the next node.
          this.line?.destroy();
          return;
        }
        this.fail(errorOf(message, "subscribe"));
        return;
      }
      default:
        // late_event and anything newer: not windows.
        return;
    }
  }

  private ack(seq: number, partition: number | undefined): Promise<void> {
    if (this.closed) {
      return Promise.reject(new WindowNodeError(ErrorCode.Unavailable, "the subscription was closed", "ack"));
    }
    const send = (): Promise<void> => {
      const line = this.line;
      if (line === undefined || line.isClosed || line !== this.joined) {
        // Reconnecting: the ack goes out on the next connection, once the member has joined.
        return sleep(20).then(() => {
          if (this.closed) throw new WindowNodeError(ErrorCode.Unavailable, "the subscription was closed", "ack");
          return send();
        });
      }
      const msgId = this.nextMsgId++;
      return new Promise<void>((resolve, reject) => {
        this.acks.set(msgId, { resolve, reject, seq });
        const body: Record<string, unknown> = { type: "ack", msg_id: msgId, seqs: [seq] };
        // With --partitions an ack names the partition whose seqs it acknowledges.
        if (partition !== undefined) body.partition = partition;
        line.send(body);
      });
    };
    return send();
  }

  private push(window: W): void {
    const waiter = this.waiters.shift();
    if (waiter !== undefined) {
      waiter.resolve({ value: window, done: false });
      return;
    }
    this.queue.push(window);
    if (!this.paused && this.queue.length >= HIGH_WATER) {
      this.paused = true;
      this.line?.pause();
    }
  }

  private lost(line: Line): void {
    if (line !== this.line) return;
    this.line = undefined;
    this.paused = false;
    // Acks in flight on the lost connection: unknown whether they landed. Their windows are
    // handed out again if not, so the caller learns it by error 11 and need not do anything.
    for (const ack of this.acks.values()) {
      ack.reject(new WindowNodeError(ErrorCode.Unavailable, `connection lost before ack_ok of seq ${ack.seq}; unless it landed, the window is handed out again`, "ack"));
    }
    this.acks.clear();
    if (this.closed) return;
    this.index = (this.index + 1) % this.rotation.nodes.length;
    void sleep(20).then(() => this.connect());
  }

  private fail(error: unknown): void {
    if (this.failure !== undefined || this.closed) return;
    this.failure = error;
    this.readyReject(error);
    this.closed = true;
    this.line?.destroy();
    this.wake();
  }

  private wake(): void {
    for (const waiter of this.waiters.splice(0)) {
      if (this.failure !== undefined) waiter.reject(this.failure);
      else waiter.resolve({ value: undefined, done: true });
    }
  }
}
