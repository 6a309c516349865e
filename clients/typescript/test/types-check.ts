// Compiled (not run) by `npm test`'s pretest: the published declarations, used as a TypeScript
// user would, through the package's own name and `exports`.

import {
  connect,
  DistributedTimeWindow,
  ErrorCode,
  WindowNodeError,
  type GroupWindow,
  type IngestResult,
  type Stats,
  type Window,
} from "window-node-client";

export async function usage(): Promise<void> {
  await using client = await connect({ nodes: ["127.0.0.1:7070"], maxInFlight: 8 });
  const result: IngestResult = await client.ingest([{ id: 1, timestamp: 0, payload: { any: ["json"] } }, { id: "b" }]);
  const accepted: number = result.accepted;
  for await (const window of client.subscribe({ fromSeq: 0 })) {
    const w: Window = window;
    const seq: number = w.seq;
    void seq;
    break;
  }
  for await (const window of client.subscribeGroup("workers", { maxUnacked: 10 })) {
    const g: GroupWindow = window;
    const delivery: number = g.delivery;
    void delivery;
    await window.ack();
  }
  const stats: Stats = await client.stats();
  const time: "event" | "ingest" | undefined = stats.config?.time;
  const flushed: Window[] = await client.flush();
  void [accepted, time, flushed];
  try {
    await client.close("window-0");
  } catch (error) {
    if (error instanceof WindowNodeError && error.code === ErrorCode.NotOpen) {
      const retry: boolean = error.retryable;
      void retry;
    }
  }

  const myIdentity = "ME";
  await using debouncer = new DistributedTimeWindow<string>(Number.MAX_SAFE_INTEGER, 10, { nodes: ["127.0.0.1:7070"], group: "g" }, tick);
  function tick(payloads: string[][]) {
    console.log(`${myIdentity}: payloads:${payloads.length}`);
    void debouncer.push("Trigger Me");
  }
  await debouncer.push("Trigger Me");
  await debouncer.push(["a", "b"]);
  await debouncer.flush();
  // @ts-expect-error: elements are of the declared type
  await debouncer.push(5);
}

declare const console: { log(...args: unknown[]): void };
