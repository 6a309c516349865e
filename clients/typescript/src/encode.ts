// Request lines as UTF-8 bytes, written straight into one buffer.
//
// `JSON.stringify` of an ingest request followed by the socket's UTF-8 conversion cost about
// 400 ns an event on the benchmark machine (Node 20), two thirds of the client's CPU in its raw
// ingest; this encoder writes the same bytes in about a third of that. An event that is a plain
// object (no prototype but Object's, no `toJSON`) is written field by field: the fields of
// `WindowEvent` only, in the order id, timestamp, key, value, payload (the daemon ignores any
// other field and reads fields in any order, so the request means the same); any other event,
// payloads and all other values go through `JSON.stringify`. The bytes equal
// `JSON.stringify(body) + "\n"` for every body whose plain-object events carry only those
// fields, in that order (test/encode.test.mjs).

/** The line `JSON.stringify(body) + "\n"`, as UTF-8, with `events` encoded fast. */
export function encodeLine(body: Record<string, unknown>): Uint8Array {
  const events = body.events;
  const writer = new Writer(128 + (Array.isArray(events) ? events.length * 64 : 0));
  writer.byte(OPEN_BRACE);
  let first = true;
  for (const name of Object.keys(body)) {
    const value = body[name];
    if (name === "events" && Array.isArray(value)) {
      writer.name(name, first);
      writer.events(value);
    } else {
      const text = JSON.stringify(value);
      if (text === undefined) continue; // as JSON.stringify leaves out undefined and functions
      writer.name(name, first);
      writer.utf8(text);
    }
    first = false;
  }
  writer.byte(CLOSE_BRACE);
  writer.byte(NEWLINE);
  return writer.bytes();
}

const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const NEWLINE = 0x0a;
const COMMA = 0x2c;
const QUOTE = 0x22;

/** `"name":` as bytes, and the same after a comma. */
function fieldPrefix(name: string): [Uint8Array, Uint8Array] {
  const text = `${JSON.stringify(name)}:`;
  const bytes = Uint8Array.from(text, (c) => c.charCodeAt(0));
  return [bytes, Uint8Array.from(`,${text}`, (c) => c.charCodeAt(0))];
}

/** The fields of `WindowEvent`, in the order they are written. */
const ID = fieldPrefix("id");
const TIMESTAMP = fieldPrefix("timestamp");
const KEY = fieldPrefix("key");
const VALUE = fieldPrefix("value");
const PAYLOAD = fieldPrefix("payload");

const utf8Encoder = new TextEncoder();

/** An object whose own fields are what JSON.stringify writes: Object's prototype (or none), no `toJSON`. */
function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null) return false;
  const prototype: unknown = Object.getPrototypeOf(value);
  return (prototype === Object.prototype || prototype === null) && !("toJSON" in value);
}

/** "00" to "99": two digits a division. */
const DIGIT_PAIRS = Uint8Array.from({ length: 200 }, (_, i) => 0x30 + (i % 2 === 0 ? Math.floor(i / 20) : (i >> 1) % 10));

class Writer {
  private buffer: Uint8Array;
  private at = 0;

  constructor(capacity: number) {
    this.buffer = Buffer.allocUnsafe(capacity);
  }

  bytes(): Uint8Array {
    return this.buffer.subarray(0, this.at);
  }

  byte(b: number): void {
    this.room(1);
    this.buffer[this.at++] = b;
  }

  name(name: string, first: boolean): void {
    if (!first) this.byte(COMMA);
    this.string(name);
    this.byte(0x3a);
  }

  events(events: readonly unknown[]): void {
    this.byte(0x5b);
    for (let i = 0; i < events.length; i++) {
      if (i > 0) this.byte(COMMA);
      this.event(events[i]);
    }
    this.byte(0x5d);
  }

  /** The UTF-8 bytes of `text` (JSON text already). */
  utf8(text: string): void {
    const n = text.length;
    this.room(n);
    const buffer = this.buffer;
    let at = this.at;
    for (let i = 0; i < n; i++) {
      const c = text.charCodeAt(i);
      if (c >= 0x80) {
        this.at = at;
        this.utf8Slow(text.slice(i));
        return;
      }
      buffer[at++] = c;
    }
    this.at = at;
  }

  private utf8Slow(text: string): void {
    this.room(text.length * 3);
    this.at += utf8Encoder.encodeInto(text, this.buffer.subarray(this.at)).written;
  }

  private event(event: unknown): void {
    if (!isPlainObject(event)) {
      // Anything else (a class instance, an event with its own `toJSON`, not an object) is
      // sent as JSON.stringify makes it.
      this.utf8(JSON.stringify(event) ?? "null");
      return;
    }
    const e = event as { id?: unknown; timestamp?: unknown; key?: unknown; value?: unknown; payload?: unknown };
    this.byte(OPEN_BRACE);
    // The common types are dispatched here, so that each call site stays monomorphic.
    let first = true;
    const id = e.id;
    if (typeof id === "number") {
      this.copy(ID[0]);
      this.number(id);
      first = false;
    } else if (typeof id === "string") {
      this.copy(ID[0]);
      this.string(id);
      first = false;
    } else {
      first = this.field(ID, id, first);
    }
    const timestamp = e.timestamp;
    if (typeof timestamp === "number") {
      this.copy(TIMESTAMP[first ? 0 : 1]);
      this.number(timestamp);
      first = false;
    } else if (typeof timestamp === "string") {
      this.copy(TIMESTAMP[first ? 0 : 1]);
      this.string(timestamp);
      first = false;
    } else {
      first = this.field(TIMESTAMP, timestamp, first);
    }
    first = this.field(KEY, e.key, first);
    first = this.field(VALUE, e.value, first);
    this.field(PAYLOAD, e.payload, first);
    this.byte(CLOSE_BRACE);
  }

  /** Writes one field unless its value is left out; returns whether no field was written yet. */
  private field(prefix: [Uint8Array, Uint8Array], value: unknown, first: boolean): boolean {
    if (value === undefined) {
      return first;
    } else if (typeof value === "number") {
      this.copy(prefix[first ? 0 : 1]);
      this.number(value);
    } else if (typeof value === "string") {
      this.copy(prefix[first ? 0 : 1]);
      this.string(value);
    } else {
      const text = JSON.stringify(value);
      if (text === undefined) return first;
      this.copy(prefix[first ? 0 : 1]);
      this.utf8(text);
    }
    return false;
  }

  private copy(bytes: Uint8Array): void {
    const n = bytes.length;
    this.room(n);
    const buffer = this.buffer;
    let at = this.at;
    for (let i = 0; i < n; i++) buffer[at++] = bytes[i];
    this.at = at;
  }

  /** A JSON string: printable ASCII is copied, anything else goes through `JSON.stringify`. */
  private string(s: string): void {
    const n = s.length;
    this.room(n + 2);
    const buffer = this.buffer;
    let at = this.at;
    buffer[at++] = QUOTE;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x20 || c > 0x7e || c === QUOTE || c === 0x5c) {
        this.utf8(JSON.stringify(s));
        return;
      }
      buffer[at++] = c;
    }
    buffer[at++] = QUOTE;
    this.at = at;
  }

  private number(v: number): void {
    if (!Number.isSafeInteger(v)) {
      // Fractions, large and non-finite numbers: JSON.stringify's text (`null` when not finite).
      this.utf8(JSON.stringify(v));
      return;
    }
    this.room(17);
    if (v < 0) {
      this.buffer[this.at++] = 0x2d;
      v = -v;
    }
    if (v < 0x80000000) {
      this.small(v);
      return;
    }
    // Split so that both halves fit 32-bit integer arithmetic (a safe integer is below 2^53).
    const high = Math.floor(v / 100_000_000);
    let low = (v - high * 100_000_000) | 0;
    this.small(high);
    const buffer = this.buffer;
    let at = this.at + 8;
    this.at = at;
    for (let k = 0; k < 4; k++) {
      const q = (low / 100) | 0;
      const pair = (low - q * 100) << 1;
      buffer[--at] = DIGIT_PAIRS[pair + 1];
      buffer[--at] = DIGIT_PAIRS[pair];
      low = q;
    }
  }

  /** A non-negative integer below 2^31. */
  private small(v: number): void {
    let x = v | 0;
    const digits =
      x < 10 ? 1 : x < 100 ? 2 : x < 1000 ? 3 : x < 10000 ? 4 : x < 100000 ? 5
        : x < 1000000 ? 6 : x < 10000000 ? 7 : x < 100000000 ? 8 : x < 1000000000 ? 9 : 10;
    const buffer = this.buffer;
    let at = this.at + digits;
    this.at = at;
    while (x >= 100) {
      const q = (x / 100) | 0;
      const pair = (x - q * 100) << 1;
      buffer[--at] = DIGIT_PAIRS[pair + 1];
      buffer[--at] = DIGIT_PAIRS[pair];
      x = q;
    }
    if (x >= 10) {
      buffer[--at] = DIGIT_PAIRS[(x << 1) + 1];
      buffer[--at] = DIGIT_PAIRS[x << 1];
    } else {
      buffer[--at] = 0x30 + x;
    }
  }

  private room(n: number): void {
    if (this.at + n <= this.buffer.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.at + n));
    grown.set(this.buffer.subarray(0, this.at));
    this.buffer = grown;
  }
}
