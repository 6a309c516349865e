/** The daemon's error codes (docs/protocol.md, "Errors"). */
export const ErrorCode = {
  /** `type` is not a request this node serves. */
  UnknownType: 10,
  /** Temporarily unavailable: safe to send again, to this or another node. */
  Unavailable: 11,
  /** Malformed request: a bad field or value; nothing was applied. */
  Malformed: 12,
  /** Internal error of the daemon. */
  Internal: 13,
  /** `close` of a window that is not open. */
  NotOpen: 20,
} as const;

/**
 * An error from the daemon (its wire `code` and `text`), or one the client makes itself with the
 * same codes: 11 when no node of the list answered within the failover timeout.
 */
export class WindowNodeError extends Error {
  /** The wire code: see {@link ErrorCode}. */
  readonly code: number;
  /** The request type the error answers (`ingest`, `subscribe`, `ack`, ...), when known. */
  readonly request?: string;

  constructor(code: number, text: string, request?: string) {
    super(request === undefined ? `error ${code}: ${text}` : `${request}: error ${code}: ${text}`);
    this.name = "WindowNodeError";
    this.code = code;
    this.request = request;
  }

  /** Whether sending the same request again (to another node) may succeed. */
  get retryable(): boolean {
    return this.code === ErrorCode.Unavailable;
  }
}
