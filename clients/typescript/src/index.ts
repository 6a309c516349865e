export { connect, Client, type ConnectOptions, type SubscribeOptions, type GroupOptions } from "./client.js";
export { Subscription } from "./subscription.js";
export { WindowNodeError, ErrorCode } from "./errors.js";
export { DistributedTimeWindow, type DistributedTimeWindowConnection, type DistributedTimeWindowOptions } from "./distributed-time-window.js";
export type { WindowEvent, IngestResult, Window, GroupWindow, Stats, ServeConfig } from "./types.js";
