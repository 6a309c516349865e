// The client's request connection: ingest, close, flush and stats, pipelined on one connection,
// sent again to the next node when the connection is lost or a node answers error 11.

import { encodeLine } from "./encode.js";
import { ErrorCode, WindowNodeError } from "./errors.js";
import { connectAny, errorOf, sleep, type Line, type Message, type Rotation } from "./wire.js";

interface Pending {
  /** The request's type, for its errors. */
  type: string;
  /** The request's line, msg_id included; sent again as it is (its request_id makes that safe). */
  line: Uint8Array;
  resolve(reply: Message): void;
  reject(error: WindowNodeError): void;
  /** When it was first sent: it is given up (error 11) after the failover timeout. */
  since: number;
}

export class Requests {
  private line: Line | undefined;
  private connecting: Promise<void> | undefined;
  private index = 0;
  private nextMsgId = 1;
  private readonly pending = new Map<number, Pending>();
  private ended = false;

  constructor(private readonly rotation: Rotation) {}

  /** Connects now, so that `connect()` fails early when no node answers. */
  async open(): Promise<void> {
    await this.ensure();
  }

  /** The address of the node currently connected, if any. */
  get address(): string | undefined {
    return this.line?.address;
  }

  /** Sends one request and resolves with its reply (never with an error reply). */
  request(type: string, fields: Record<string, unknown>): Promise<Message> {
    if (this.ended) {
      return Promise.reject(new WindowNodeError(ErrorCode.Unavailable, "the client was ended", type));
    }
    const msgId = this.nextMsgId++;
    let line: Uint8Array;
    try {
      line = encodeLine({ type, msg_id: msgId, ...fields });
    } catch (error) {
      // What JSON cannot carry (a BigInt, a cycle): this request fails, the client goes on.
      return Promise.reject(error);
    }
    return new Promise<Message>((resolve, reject) => {
      this.pending.set(msgId, { type, line, resolve, reject, since: Date.now() });
      if (this.line !== undefined && !this.line.isClosed) {
        this.line.write(line);
      } else {
        void this.ensure().catch(() => {});
      }
    });
  }

  /** Ends the connection; requests still waiting are rejected with error 11. */
  end(): void {
    this.ended = true;
    this.line?.destroy();
    this.failAll(new WindowNodeError(ErrorCode.Unavailable, "the client was ended before the reply came"));
  }

  /** Connects (to the next node of the list) unless connected, then sends what waits. */
  private ensure(): Promise<void> {
    if (this.line !== undefined && !this.line.isClosed) return Promise.resolve();
    if (this.connecting === undefined) {
      this.connecting = connectAny(
        this.rotation,
        this.index,
        (message) => this.receive(message),
        (line) => this.lost(line),
        () => this.ended,
      )
        .then(({ line, index }) => {
          this.line = line;
          this.index = index;
          // Everything not yet answered goes out again, in order, on the new connection.
          const now = Date.now();
          const waiting = [...this.pending.keys()].sort((a, b) => a - b);
          for (const msgId of waiting) {
            const pending = this.pending.get(msgId)!;
            if (now - pending.since > this.rotation.failoverTimeoutMs) {
              this.pending.delete(msgId);
              pending.reject(
                new WindowNodeError(
                  ErrorCode.Unavailable,
                  `no node answered within ${this.rotation.failoverTimeoutMs} ms; it is safe to send it again`,
                  pending.type,
                ),
              );
            } else {
              line.write(pending.line);
            }
          }
        })
        .catch((error: WindowNodeError) => {
          this.failAll(error);
          throw error;
        })
        .finally(() => {
          this.connecting = undefined;
        });
    }
    return this.connecting;
  }

  private receive(message: Message): void {
    const msgId = message.in_reply_to;
    if (message.type === "error" && message.code === ErrorCode.Unavailable) {
      // The node cannot serve now (its coordinator is gone for too long, it is stopping, or it
      // has too many connections): the requests go to the next node, with their request ids.
      this.line?.destroy();
      return;
    }
    if (typeof msgId !== "number") return;
    const pending = this.pending.get(msgId);
    if (pending === undefined) return;
    this.pending.delete(msgId);
    if (message.type === "error") {
      pending.reject(errorOf(message, pending.type));
    } else {
      pending.resolve(message);
    }
  }

  private lost(line: Line): void {
    if (line !== this.line) return;
    this.line = undefined;
    this.index = (this.index + 1) % this.rotation.nodes.length;
    if (!this.ended && this.pending.size > 0) {
      // A short pause, so that a node that is going away is not hammered.
      void sleep(20).then(() => this.ensure().catch(() => {}));
    }
  }

  private failAll(error: WindowNodeError): void {
    const waiting = [...this.pending.values()];
    this.pending.clear();
    for (const pending of waiting) {
      pending.reject(new WindowNodeError(error.code, error.message, pending.type));
    }
  }
}
