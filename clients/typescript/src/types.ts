import type { Message } from "./wire.js";

/** An event to ingest. With `serve --time ingest`, `timestamp` may be left out. */
export interface WindowEvent {
  /** Unique within its window: a repeated id is counted once (ingestion is idempotent). */
  id: string | number;
  /** RFC 3339 text or integer milliseconds since the epoch. */
  timestamp?: string | number;
  key?: string;
  value?: number;
  /** Any JSON value; it comes back with the event's window in `payloads`. */
  payload?: unknown;
}

/** The reply to one ingest: how many events were new, repeated, or behind the watermark. */
export interface IngestResult {
  accepted: number;
  duplicates: number;
  late: number;
}

/** A fired window, as `window_closed` (or an entry of `flushed`) carries it. */
export interface Window {
  windowId: string;
  windowStart: string;
  windowEnd: string;
  key?: string;
  count: number;
  /** Event ids, in the order first admitted. */
  events: Array<string | number>;
  /** One per event id (`null` for an event without one); absent when no event had one. */
  payloads?: unknown[];
  sum?: number;
  min?: number;
  max?: number;
  /** `length`, `time`, `watermark`, `close` or `flush`. */
  reason: string;
  /** Dense position in the durable output log. */
  seq: number;
  epoch: number;
  /** With `--partitions`: the partition that fired it (its `seq` is that partition's). */
  partition?: number;
  /** In a consumer group: 1 the first time it is handed out, more when handed out again. */
  delivery?: number;
}

/** A window handed to one member of a consumer group. */
export interface GroupWindow extends Window {
  delivery: number;
  /**
   * Acknowledges the window (durably) on the member's current connection. Until then the group
   * hands it to another member if this one goes away or holds it past `--ack-timeout`.
   * Rejects with {@link WindowNodeError} code 12 when the window now belongs to another member
   * (it was handed out again while this member was reconnecting).
   */
  ack(): Promise<void>;
}

/** The daemon's settings, as `stats` reports them (null when off). */
export interface ServeConfig {
  windowSizeMs: number;
  time: "event" | "ingest";
  allowedLatenessMs: number | null;
  maxEvents: number | null;
  maxAgeMs: number | null;
}

/** `stats_ok`, keys in camelCase. */
export interface Stats {
  openWindows: number;
  bufferedEvents: number;
  emittedWindows: number;
  accepted: number;
  duplicates: number;
  late: number;
  watermark?: string | null;
  leaseHolder?: string | null;
  epoch?: number;
  connections?: number;
  config?: ServeConfig;
  groups?: Array<{ name?: string; group?: string; members: number; pending: number; acked: number; redelivered: number; lag: number; [field: string]: unknown }>;
  [field: string]: unknown;
}

export function windowOf(message: Message): Window {
  const window: Window = {
    windowId: message.window_id as string,
    windowStart: message.window_start as string,
    windowEnd: message.window_end as string,
    count: message.count as number,
    events: message.events as Array<string | number>,
    reason: message.reason as string,
    seq: message.seq as number,
    epoch: message.epoch as number,
  };
  if (message.key !== undefined) window.key = message.key as string;
  if (message.payloads !== undefined) window.payloads = message.payloads as unknown[];
  if (message.sum !== undefined) window.sum = message.sum as number;
  if (message.min !== undefined) window.min = message.min as number;
  if (message.max !== undefined) window.max = message.max as number;
  if (message.partition !== undefined) window.partition = message.partition as number;
  if (message.delivery !== undefined) window.delivery = message.delivery as number;
  return window;
}

/** snake_case keys to camelCase, recursively (for `stats`, which carries no user data). */
export function camelCase(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(camelCase);
  if (typeof value !== "object" || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [key, inner] of Object.entries(value)) {
    out[key.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())] = camelCase(inner);
  }
  return out;
}
