// Types of the notify client (src/notify.js).

/** The version of this package. */
export declare const VERSION: string;

/** A position in one stream: its epoch and the offset of an event in it. */
export interface Position {
  epoch: string;
  offset: number;
}

/** An `event` frame (docs/PROTOCOL.md). Exactly one of `user`, `channel`, `broadcast` is set. */
export interface NotifyEvent<Data = unknown> {
  type: "event";
  id: string;
  event: string;
  ts: number;
  user?: string;
  channel?: string;
  broadcast?: true;
  epoch?: string;
  offset?: number;
  data: Data;
}

/** What an event handler gets besides the event. */
export interface EventContext {
  /** "user", "broadcast" or "channel:<name>". */
  stream: string;
  /** Acks the event (user stream, tenants with acks); returns whether it was sent. */
  ack(): boolean;
}

export type ConnectionState = "idle" | "connecting" | "connected" | "disconnected" | "closed";

export interface StateChange {
  state: ConnectionState;
  /** The close code (disconnected, closed); over SSE, the code of the host's `close` frame. */
  code?: number;
  reason?: string;
  /** The host's connection id (connected). */
  connectionId?: string;
  /** The user the host authenticated (connected). */
  user?: string;
  /** The transport of the connection (connected). */
  transport?: Transport;
  /** Failed attempts since the last lasting connection (disconnected). */
  attempt?: number;
  /** How long the client waits before the next attempt, in ms (disconnected). */
  retryInMs?: number;
  /** The host's refusal code, when it refused the connection (disconnected). */
  error?: string;
}

export type Transport = "websocket" | "sse";

export interface Unread {
  epoch: string;
  offset: number;
  acked: number;
  unread: number;
}

export interface ClientOptions {
  /** Base URL of the host: `https://…`, `http://…`, `wss://…` or `ws://…`. */
  url: string;
  tenant: string;
  /**
   * A JWT, or a getter called again once a token expired or was refused, and before the
   * open connection's token expires (the new token is handed over without reconnecting).
   */
  token?: string | (() => string | Promise<string>);
  /** The user id, for tenants in `insecure` mode. */
  user?: string;
  /** More query parameters (for a tenant's auth plugin). */
  params?: Record<string, string>;
  /** Channels to subscribe at once (and after every reconnect). */
  channels?: string[];
  /** Positions to resume from, as saved from `client.positions.toJSON()`. */
  positions?: Record<string, Position>;
  /** Ack every user-stream event once its handlers returned without error. */
  autoAck?: boolean;
  /** Ask for delta updates on channels (WebSocket; default true): events the publisher sent
   * with `delta` arrive as the difference from the channel's previous event and are rebuilt
   * before the handlers see them. */
  delta?: boolean;
  /** First reconnect delay ceiling in ms, doubling per failed attempt; each wait is between
   * half the ceiling and the ceiling. Default 500. */
  initialBackoffMs?: number;
  /** Largest reconnect delay ceiling in ms; default 120000. */
  maxBackoffMs?: number;
  /** Application ping period in ms (0: none); default 20000. */
  pingIntervalMs?: number;
  /** "auto" (default): WebSocket, falling back to SSE when there is no WebSocket or the
   * upgrade fails on the way to a host that answers HTTP. "websocket" or "sse": only that. */
  transport?: "auto" | Transport;
  /** The WebSocket constructor; default `globalThis.WebSocket`. */
  WebSocket?: typeof WebSocket;
  /** Used for SSE and its acks, and to learn why a WebSocket connection failed; null: never
   * ask (every WebSocket failure is retried, SSE is unavailable). */
  fetch?: typeof fetch | null;
}

/** Applies a Fossil delta to `source` (the format delta updates use); throws unless the
 * result has the size and checksum the delta promises. */
export declare function applyFossilDelta(source: Uint8Array, delta: Uint8Array): Uint8Array;

/** An error the client reports: a refusal (`status`), a final close (`closeCode`), or an
 * `error` frame of the host (`code`, `channel`). */
export declare class NotifyError extends Error {
  code: string;
  status?: number;
  closeCode?: number;
  /** The reason of a final close (for 4005, the backend's). */
  reason?: string;
  channel?: string;
}

/** Positions per stream, for resuming and de-duplication. */
export declare class Positions {
  constructor(initial?: Record<string, Position>);
  get(stream: string): Position | undefined;
  set(stream: string, position: Position): void;
  advance(stream: string, position: Position): boolean;
  seed(stream: string, position: Partial<Position>): boolean;
  isNew(stream: string, position: Position): boolean;
  delete(stream: string): boolean;
  toJSON(): Record<string, Position>;
}

export interface ClientEvents {
  event: (event: NotifyEvent, context: EventContext) => void | Promise<void>;
  state: (change: StateChange) => void;
  /** The positions changed (before the `event` handlers of the event that moved them):
   * what to save to resume after a reload. */
  positions: (positions: Record<string, Position>) => void;
  recovered: (info: { stream: string; recovered: false }) => void;
  unread: (info: Unread) => void;
  subscribed: (info: { channel: string; recovered: boolean }) => void;
  /** `reason` is set when the host ended the subscription (fresh credentials no longer grant it). */
  unsubscribed: (info: { channel: string; reason?: string }) => void;
  /** The connection took a fresh token; `expiresAt` is its expiry (Unix seconds). */
  refreshed: (info: { expiresAt: number | null }) => void;
  error: (error: Error) => void;
  frame: (frame: Record<string, unknown>) => void;
  /** The client switched transports (to SSE, after WebSocket failed). */
  transport: (info: { transport: Transport; reason: string }) => void;
}

export declare class NotifyClient {
  constructor(options: ClientOptions);
  readonly state: ConnectionState;
  readonly transport: Transport;
  readonly positions: Positions;
  on<K extends keyof ClientEvents>(type: K, handler: ClientEvents[K]): () => void;
  off<K extends keyof ClientEvents>(type: K, handler: ClientEvents[K]): void;
  connect(): this;
  close(): void;
  /**
   * `token`: a subscription token from your backend (or a function of the channel returning
   * one, asked on every subscription) for a channel the connection's token does not grant.
   */
  subscribe(channel: string, options?: { token?: string | ((channel: string) => string | Promise<string>) }): void;
  unsubscribe(channel: string): void;
  /**
   * Subscribes this browser to Web Push through `registration` and registers it as a device
   * of the signed-in user; without `vapidPublicKey`, the tenant's key is read from the host.
   */
  registerPush(registration: ServiceWorkerRegistration, vapidPublicKey?: string, options?: { label?: string }): Promise<PushDevice>;
  /** Removes this browser's push device from the host and unsubscribes it. */
  unregisterPush(registration: ServiceWorkerRegistration): Promise<boolean>;
  /** Over WebSocket an `ack` frame; over SSE a `POST /v1/sse/{tenant}/ack`. False when not connected. */
  ack(event: Position): boolean;
  /** An application ping (WebSocket only; SSE streams carry the host's heartbeats). */
  ping(): boolean;
}

/** The stream an event frame came through. */
export declare function streamOf(event: NotifyEvent): string;

/** A device as the host keeps it (docs/PUSH.md). */
export interface PushDevice {
  id: string;
  platform: "web" | "fcm" | "apns";
  subscription?: { endpoint: string; keys: { p256dh: string; auth: string } };
  token?: string;
  label?: string;
  registered_at: number;
}
