// The service-worker side of notify's Web Push (docs/PUSH.md): shows each pushed
// notification, closes one when the user read its event elsewhere (a withdrawal), and opens
// a notification's link when it is clicked. In the service worker:
//
//   import { handlePush } from "@notify/client/sw";
//   handlePush(self);
//
// `options.show(message)` may return the notification's title and options instead of the
// defaults, or null to show nothing; `options.open(message)` the URL a click opens.

/**
 * Installs `push` and `notificationclick` listeners on `scope` (the service worker's
 * global `self`).
 */
export function handlePush(scope, options = {}) {
  scope.addEventListener("push", (event) => {
    const message = event.data?.json();
    if (!message) return;
    event.waitUntil(received(scope, message, options));
  });
  scope.addEventListener("notificationclick", (event) => {
    event.notification.close();
    const message = event.notification.data ?? {};
    const url = options.open ? options.open(message) : message.url;
    if (url) event.waitUntil(focusOrOpen(scope, url));
  });
}

/** Shows a notification, or closes the ones a withdrawal names. */
export async function received(scope, message, options = {}) {
  if (message.type === "withdraw") {
    const shown = await scope.registration.getNotifications(message.tag ? { tag: message.tag } : undefined);
    for (const notification of shown) {
      if (notification.data?.id === message.id || (message.tag && notification.tag === message.tag)) notification.close();
    }
    return;
  }
  const custom = options.show?.(message);
  if (custom === null) return;
  const { title, ...rest } = custom ?? {
    title: message.title,
    body: message.body ?? "",
    icon: message.icon ?? undefined,
    tag: message.tag ?? undefined,
  };
  await scope.registration.showNotification(title, { ...rest, data: message });
}

async function focusOrOpen(scope, url) {
  const windows = await scope.clients.matchAll({ type: "window", includeUncontrolled: true });
  const open = windows.find((w) => w.url === url);
  if (open) return open.focus();
  return scope.clients.openWindow(url);
}
