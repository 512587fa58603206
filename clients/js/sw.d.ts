// Types of @notify/client/sw: the service-worker side of Web Push (docs/PUSH.md).

/** What a push carries: a notification, or the withdrawal of one whose event was read. */
export type PushMessage =
  | {
      type: "notification";
      id: string;
      event: string;
      ts: number;
      title: string;
      body: string | null;
      icon: string | null;
      url: string | null;
      tag: string | null;
      data: unknown;
      truncated: boolean;
    }
  | { type: "withdraw"; id: string; tag: string | null };

export interface PushOptions {
  /** The notification to show instead of the default; null shows nothing. */
  show?: (message: PushMessage) => ({ title: string } & NotificationOptions) | null | undefined;
  /** The URL a click opens (the message's `url` by default). */
  open?: (message: PushMessage) => string | null | undefined;
}

/** Installs `push` and `notificationclick` listeners on the service worker's `self`. */
export function handlePush(scope: ServiceWorkerGlobalScope, options?: PushOptions): void;

/** Shows `message`'s notification, or closes the ones a withdrawal names. */
export function received(scope: ServiceWorkerGlobalScope, message: PushMessage, options?: PushOptions): Promise<void>;
