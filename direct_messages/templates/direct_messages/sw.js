// The web client's service worker (served by direct_messages.views.service_worker at
// <prefix>direct/sw.js, so its scope is <prefix>direct/). It shows the Web Push
// notifications the server sends (docs/notifications.md, "What it says") and, on a
// click, brings up the conversation. It has no fetch handler: pages load as without it.

"use strict";

const scope = new URL(self.registration.scope);
const inboxUrl = new URL("inbox/", scope).href;

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

/** A same-origin URL from the payload, else the inbox: a click never leaves the site. */
function safeUrl(url) {
  try {
    const target = new URL(url, scope);
    if (target.origin === scope.origin) return target.href;
  } catch {
    // not a URL: the inbox
  }
  return inboxUrl;
}

function payloadOf(event) {
  if (!event.data) return {};
  try {
    const data = event.data.json();
    return data && typeof data === "object" ? data : {};
  } catch {
    return { body: event.data.text() };
  }
}

self.addEventListener("push", (event) => {
  const data = payloadOf(event);
  const url = safeUrl(data.url || inboxUrl);
  const shown = self.registration.showNotification(String(data.title || "New message"), {
    body: String(data.body || ""),
    // One notification per conversation: the next replaces it, and still alerts.
    tag: data.tag ? String(data.tag) : undefined,
    renotify: Boolean(data.tag),
    data: { url, message_id: data.message_id ?? null, badge: data.badge ?? null },
  });
  // The unread total on the app's icon, where the browser has one (an installed app).
  const badge =
    Number.isInteger(data.badge) && "setAppBadge" in navigator
      ? navigator.setAppBadge(data.badge).catch(() => {})
      : null;
  event.waitUntil(Promise.all([shown, badge]));
});

const pathOf = (url) => new URL(url).pathname;

/** Focus a tab already on the conversation; else turn a tab showing only the inbox into
 * it; else open a new window. A tab in another conversation is left alone (it may hold a
 * draft). */
async function openConversation(url) {
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  const same = windows.find((client) => pathOf(client.url) === pathOf(url));
  if (same) return same.focus();
  const inbox = windows.find((client) => pathOf(client.url) === pathOf(inboxUrl));
  if (inbox) {
    try {
      const navigated = await inbox.navigate(url);
      if (navigated) return navigated.focus();
    } catch {
      // not controlled by this worker (yet): open a window instead
    }
  }
  return self.clients.openWindow(url);
}

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(openConversation(safeUrl(event.notification.data?.url || inboxUrl)));
});
