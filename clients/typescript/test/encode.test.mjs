// The request encoder (src/encode.ts) against JSON.stringify: the same bytes for every body whose
// plain-object events carry only WindowEvent's fields in their order, over hand-picked awkward
// values and random ones; the same JSON value for fields in another order.

import assert from "node:assert/strict";
import { test } from "node:test";
import { encodeLine } from "../dist/encode.js";

const expected = (body) => new TextEncoder().encode(JSON.stringify(body) + "\n");

function assertSame(body) {
  const got = Buffer.from(encodeLine(body));
  const want = Buffer.from(expected(body));
  assert.equal(got.toString("utf8"), want.toString("utf8"));
  assert.ok(got.equals(want), "the bytes differ");
}

const AWKWARD_NUMBERS = [
  0, -0, 1, -1, 9, 10, 99, 100, 2147483647, 2147483648, -2147483648, -2147483649, 4294967296,
  1_705_305_600_000, -1_705_305_600_000, 99_999_999, 100_000_000, 100_000_001, 1e15, 1e16,
  Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, 2 ** 53, 1e21, 1.5, -0.25, 1e-7, 123.456,
  Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, Number.MAX_VALUE, Number.MIN_VALUE,
];

const AWKWARD_STRINGS = [
  "", "k0", "a\"b", "back\\slash", "tab\there", "new\nline", "\u0000\u001f\u007f", "é", "日本語",
  "emoji 😀", "lone \ud800 surrogate", "\udc00", "2024-01-15T08:00:00.123Z", "x".repeat(5000),
  "mixed ascii then ü at the end",
];

test("awkward numbers and strings in every field encode as JSON.stringify does", () => {
  const events = [];
  for (const n of AWKWARD_NUMBERS) events.push({ id: n, timestamp: n, value: n, payload: n });
  for (const s of AWKWARD_STRINGS) events.push({ id: s, timestamp: s, key: s, payload: s });
  assertSame({ type: "ingest", msg_id: 1, request_id: "c-1", events });
});

test("fields left out, null, payloads of every JSON kind, non-object events", () => {
  assertSame({
    type: "ingest",
    msg_id: 7,
    request_id: undefined,
    events: [
      { id: 1 },
      { timestamp: 5 },
      {},
      { id: 1, timestamp: undefined, key: undefined, value: undefined, payload: undefined },
      { id: null, key: null, value: null, payload: null },
      { id: true, timestamp: false },
      { id: 2, payload: { nested: [1, "two", { three: [null, true, 3.5] }], "ü": "ß" } },
      { id: 3, payload: [[], {}, ""] },
      { id: 4, payload: () => 1, value: () => 2 },
      { id: 5, payload: { toJSON: () => "from toJSON" } },
      null,
      7,
      "text",
      [1, 2],
      undefined,
    ],
  });
});

test("bodies without events, and an empty events array", () => {
  assertSame({ type: "stats", msg_id: 3 });
  assertSame({ type: "flush", msg_id: 4, request_id: "r", until: "2024-01-15T08:00:00Z" });
  assertSame({ type: "ingest", msg_id: 5, events: [] });
  assertSame({ type: "ack", msg_id: 6, seqs: [1, 2, 3], partition: 0 });
  assertSame({ type: "ingest", msg_id: 8, events: "not an array" });
});

test("random events encode as JSON.stringify does", () => {
  let state = 12345;
  const random = () => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state / 2147483648;
  };
  const pick = (values) => values[Math.floor(random() * values.length)];
  const anyNumber = () =>
    pick([
      () => Math.floor(random() * 2 ** 53) * (random() < 0.5 ? -1 : 1),
      () => Math.floor(random() * 1000),
      () => (random() - 0.5) * 1e6,
      () => pick(AWKWARD_NUMBERS),
    ])();
  const anyString = () => {
    const length = Math.floor(random() * 12);
    let s = "";
    for (let i = 0; i < length; i++) s += String.fromCharCode(pick([32 + Math.floor(random() * 95), Math.floor(random() * 0x3000)]));
    return s;
  };
  const scalar = () => pick([anyNumber, anyString, () => undefined])();
  for (let round = 0; round < 50; round++) {
    const events = Array.from({ length: 200 }, () => ({
      id: scalar(),
      timestamp: scalar(),
      key: pick([anyString, () => undefined])(),
      value: pick([anyNumber, () => undefined])(),
      payload: pick([() => undefined, anyString, () => ({ a: anyNumber(), b: [anyString()] })])(),
    }));
    assertSame({ type: "ingest", msg_id: round, request_id: `r-${round}`, events });
  }
});

test("events that are not plain objects are sent as JSON.stringify makes them", () => {
  class Reading {
    constructor(id) {
      this.id = id;
      this.timestamp = 5;
    }
    get key() {
      return "from a getter";
    }
  }
  const renamed = { id: 1, ts: 7, toJSON: () => ({ id: 1, timestamp: 7 }) };
  const bare = Object.assign(Object.create(null), { id: 2, timestamp: 3, key: "k" });
  assertSame({
    type: "ingest",
    msg_id: 1,
    events: [new Reading(1), renamed, new Date(0), new Number(5), bare],
  });
});

test("fields in another order give the same JSON value", () => {
  const body = { type: "ingest", msg_id: 1, events: [{ payload: [1], key: "k", timestamp: 9, id: "a", value: 2 }] };
  const line = new TextDecoder().decode(encodeLine(body));
  assert.deepEqual(JSON.parse(line), JSON.parse(JSON.stringify(body)));
  assert.equal(line, '{"type":"ingest","msg_id":1,"events":[{"id":"a","timestamp":9,"key":"k","value":2,"payload":[1]}]}\n');
});

test("what JSON cannot carry throws, as JSON.stringify does", () => {
  const cycle = {};
  cycle.self = cycle;
  assert.throws(() => encodeLine({ type: "ingest", events: [{ id: 1n }] }), TypeError);
  assert.throws(() => encodeLine({ type: "ingest", events: [{ id: 1, payload: cycle }] }), TypeError);
});

test("fields beyond WindowEvent's are left out (the daemon ignores them)", () => {
  const line = new TextDecoder().decode(encodeLine({ type: "ingest", msg_id: 1, events: [{ id: 1, extra: "x", key: "k" }] }));
  assert.equal(line, '{"type":"ingest","msg_id":1,"events":[{"id":1,"key":"k"}]}\n');
});
