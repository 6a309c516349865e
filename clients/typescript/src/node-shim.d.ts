// The few Node built-ins this package uses, declared here so that `typescript` stays the only
// devDependency (no @types/node). Only what the source calls is declared; the emitted .d.ts
// files of the package never mention these types.

declare module "node:net" {
  export interface Socket {
    setEncoding(encoding: "utf8"): this;
    setNoDelay(noDelay?: boolean): this;
    write(data: string | Uint8Array): boolean;
    end(): this;
    destroy(error?: Error): this;
    pause(): this;
    resume(): this;
    on(event: "data", listener: (chunk: string) => void): this;
    on(event: "connect", listener: () => void): this;
    on(event: "close", listener: (hadError: boolean) => void): this;
    on(event: "error", listener: (error: Error) => void): this;
    once(event: "connect", listener: () => void): this;
    once(event: "error", listener: (error: Error) => void): this;
    removeListener(event: string, listener: (...args: any[]) => void): this;
    readonly destroyed: boolean;
  }
  export function createConnection(options: { host: string; port: number }): Socket;
}

declare module "node:crypto" {
  export function randomUUID(): string;
}

declare function setTimeout(callback: () => void, ms: number): unknown;
declare function clearTimeout(handle: unknown): void;
declare function setImmediate(callback: () => void): unknown;
/** Node's Buffer, as far as this package uses it: memory that is not zeroed first. */
declare const Buffer: { allocUnsafe(size: number): Uint8Array };
declare class TextEncoder {
  encodeInto(source: string, destination: Uint8Array): { read: number; written: number };
}
declare const console: { error(...args: unknown[]): void; warn(...args: unknown[]): void };
