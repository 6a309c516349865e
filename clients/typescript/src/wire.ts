// Line-delimited JSON over TCP: one connection to one node, and the node list's rotation.

import { createConnection, type Socket } from "node:net";
import { encodeLine } from "./encode.js";
import { ErrorCode, WindowNodeError } from "./errors.js";

/** A message as it came off the wire. */
export type Message = { type: string; in_reply_to?: number; [field: string]: unknown };

/** Splits `host:port` (IPv6 as `[::1]:7070`). */
export function parseAddress(address: string): { host: string; port: number } {
  const match = /^\[?([^\]]*)\]?:(\d+)$/.exec(address);
  if (match === null) {
    throw new TypeError(`node address must be HOST:PORT, got ${JSON.stringify(address)}`);
  }
  return { host: match[1], port: Number(match[2]) };
}

/** One open connection: writes lines, hands each received message to `onMessage`. */
export class Line {
  private buffered = "";
  private closed = false;

  private constructor(
    private readonly socket: Socket,
    readonly address: string,
  ) {}

  /** Stops reading (the daemon's side waits); `resume` reads again. */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  /** Connects within `timeoutMs`, or rejects. */
  static open(
    address: string,
    timeoutMs: number,
    onMessage: (message: Message, line: Line) => void,
    onClose: (line: Line) => void,
  ): Promise<Line> {
    const { host, port } = parseAddress(address);
    return new Promise((resolve, reject) => {
      const socket = createConnection({ host, port });
      const line = new Line(socket, address);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connecting to ${address} took longer than ${timeoutMs} ms`));
      }, timeoutMs);
      const failed = (error: Error) => {
        clearTimeout(timer);
        socket.destroy();
        reject(error);
      };
      socket.once("error", failed);
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.removeListener("error", failed);
        socket.setNoDelay(true);
        socket.setEncoding("utf8");
        socket.on("error", () => {
          // A reset: "close" follows, which is where the loss is handled.
        });
        socket.on("close", () => {
          line.closed = true;
          onClose(line);
        });
        socket.on("data", (chunk) => line.receive(chunk, onMessage));
        resolve(line);
      });
    });
  }

  get isClosed(): boolean {
    return this.closed || this.socket.destroyed;
  }

  send(body: Record<string, unknown>): void {
    this.write(encodeLine(body));
  }

  /** Writes a line encoded already (`encodeLine`). */
  write(line: Uint8Array): void {
    if (!this.isClosed) {
      this.socket.write(line);
    }
  }

  /** Ends the connection now; `onClose` follows. */
  destroy(): void {
    this.socket.destroy();
  }

  private receive(chunk: string, onMessage: (message: Message, line: Line) => void): void {
    this.buffered += chunk;
    let end: number;
    while ((end = this.buffered.indexOf("\n")) >= 0) {
      const text = this.buffered.slice(0, end).trim();
      this.buffered = this.buffered.slice(end + 1);
      if (text.length === 0) continue;
      let message: Message;
      try {
        message = JSON.parse(text) as Message;
      } catch {
        // The daemon writes JSON only; a line that is not is a broken connection.
        this.destroy();
        return;
      }
      // A reply in an envelope (the daemon answers envelopes in kind) is unwrapped.
      if (typeof message.body === "object" && message.body !== null && message.type === undefined) {
        message = message.body as Message;
      }
      onMessage(message, this);
      if (this.isClosed) return;
    }
  }
}

/** How a client moves between the nodes of its list. */
export interface Rotation {
  nodes: readonly string[];
  connectTimeoutMs: number;
  failoverTimeoutMs: number;
}

/**
 * Connects to the first node of the list (from `start`, wrapping around) that answers, pausing
 * between rounds; rejects with error 11 after `failoverTimeoutMs`, or when `stopped()` says so.
 * Returns the connection and the index of its node.
 */
export async function connectAny(
  rotation: Rotation,
  start: number,
  onMessage: (message: Message, line: Line) => void,
  onClose: (line: Line) => void,
  stopped: () => boolean,
): Promise<{ line: Line; index: number }> {
  const deadline = Date.now() + rotation.failoverTimeoutMs;
  const n = rotation.nodes.length;
  let pause = 50;
  let lastError = "";
  for (;;) {
    for (let k = 0; k < n; k++) {
      if (stopped()) throw new WindowNodeError(ErrorCode.Unavailable, "the client was closed");
      const index = (start + k) % n;
      try {
        const line = await Line.open(rotation.nodes[index], rotation.connectTimeoutMs, onMessage, onClose);
        return { line, index };
      } catch (error) {
        lastError = `${rotation.nodes[index]}: ${(error as Error).message}`;
      }
    }
    if (Date.now() + pause > deadline) {
      throw new WindowNodeError(
        ErrorCode.Unavailable,
        `no node of [${rotation.nodes.join(", ")}] could be reached within ${rotation.failoverTimeoutMs} ms (last: ${lastError})`,
      );
    }
    await sleep(pause);
    pause = Math.min(pause * 2, 500);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The daemon's error reply as a typed error. */
export function errorOf(message: Message, request?: string): WindowNodeError {
  const code = typeof message.code === "number" ? message.code : ErrorCode.Internal;
  const text = typeof message.text === "string" ? message.text : JSON.stringify(message);
  return new WindowNodeError(code, text, request);
}
