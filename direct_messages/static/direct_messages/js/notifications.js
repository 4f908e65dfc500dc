// Web Push in the browser (docs/notifications.md, "In the web client"): registers the
// service worker (<prefix>direct/sw.js, from the page's configuration) on every page,
// and runs the notifications dialog: turn notifications on for this browser (permission,
// pushManager.subscribe with the server's VAPID key, POST <api>push/subscriptions),
// off again (unsubscribe, DELETE), and message previews on or off (PATCH <api>settings).

import { api, ApiError, describeError } from "./api.js";
import { apiPath, config } from "./config.js";

const supported = () =>
  "serviceWorker" in navigator && "PushManager" in window && "Notification" in window && window.isSecureContext;

let registering = null;

/** The worker's registration, registering it once per page; null where unsupported. */
export function registerWorker() {
  if (!("serviceWorker" in navigator) || !config.service_worker_url) return Promise.resolve(null);
  registering ??= navigator.serviceWorker
    .register(config.service_worker_url, { updateViaCache: "none" })
    .catch((error) => {
      console.warn("service worker not registered:", error);
      return null;
    });
  return registering;
}

/** On logging out, this browser stops getting the account's notifications: a shared
 * computer must not keep showing them (previews included) to whoever comes next. The
 * browser unsubscribes first (its push service then answers 410 and the server forgets
 * the subscription, even if the DELETE below cannot reach it), then the form goes on. */
export function unsubscribeOnLogout() {
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!form.action?.endsWith(config.logout_url) || form.dataset.unsubscribed) return;
    if (!("serviceWorker" in navigator) || !config.service_worker_url) return;
    event.preventDefault();
    const late = new Promise((resolve) => setTimeout(resolve, LOGOUT_WAIT_MS));
    Promise.race([forgetSubscription(), late])
      .catch((error) => console.warn("push subscription not removed on logout:", error))
      .finally(() => {
        form.dataset.unsubscribed = "1";
        form.requestSubmit();
      });
  });
}

const LOGOUT_WAIT_MS = 3000; // logging out never waits longer on the push service

async function forgetSubscription() {
  const registration = await registerWorker();
  const subscription = await registration?.pushManager?.getSubscription();
  if (!subscription) return;
  const { endpoint } = subscription;
  await subscription.unsubscribe();
  await api("DELETE", apiPath("push/subscriptions"), { endpoint });
}

function keyBytes(base64url) {
  const base64 = base64url.replace(/-/gu, "+").replace(/_/gu, "/");
  const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

function sameKey(buffer, bytes) {
  if (!buffer) return false;
  const other = new Uint8Array(buffer);
  return other.length === bytes.length && other.every((byte, i) => byte === bytes[i]);
}

/** The server's VAPID public key, or null when it has no Web Push (404). */
async function vapidKey() {
  try {
    return (await api("GET", apiPath("push/vapid-public-key"))).key;
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

// A browser that cannot reach its push service leaves subscribe() pending for ever (an
// offline Chromium does). If it succeeds later, the next refresh() sends it to the server.
const SUBSCRIBE_TIMEOUT_MS = 30_000;

function withTimeout(promise) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error("the browser's push service did not answer.")), SUBSCRIBE_TIMEOUT_MS);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

const STATES = {
  unsupported: "This browser can't show notifications from this site.",
  unconfigured: "Notifications aren't set up on this server.",
  denied: "Notifications are blocked for this site. Allow them in your browser's site settings, then come back here.",
  off: "Get a notification when a message arrives and you're not looking at the conversation.",
  on: "Notifications are on in this browser.",
  working: "One moment…",
};

export class Notifications {
  constructor({ dialog, opener }) {
    this.dialog = dialog;
    this.status = dialog.querySelector("#notifications-status");
    this.enable = dialog.querySelector("#notifications-enable");
    this.disable = dialog.querySelector("#notifications-disable");
    this.previews = dialog.querySelector("#notifications-previews");
    this.previewsRow = dialog.querySelector(".notifications-previews");
    this.key = undefined; // the VAPID key once asked: a string, or null (none on the server)
    opener.addEventListener("click", () => this.open());
    this.enable.addEventListener("click", () => this.turnOn());
    this.disable.addEventListener("click", () => this.turnOff());
    this.previews.addEventListener("change", () => this.setPreviews(this.previews.checked));
  }

  show(state, detail = "") {
    this.dialog.dataset.state = state; // for tests and styles
    this.status.textContent = detail || STATES[state];
    this.enable.hidden = state !== "off";
    this.disable.hidden = state !== "on";
    this.previewsRow.hidden = state === "unsupported" || state === "unconfigured";
  }

  async open() {
    this.show("working");
    this.dialog.showModal();
    await this.refresh();
  }

  /** Read the state: the browser's support and permission, the server's key, this
   * browser's subscription (sent again, so the server holds it for whoever is logged in). */
  async refresh() {
    try {
      if (!supported()) return this.show("unsupported");
      if (this.key === undefined) this.key = await vapidKey();
      if (this.key === null) return this.show("unconfigured");
      this.loadPreviews();
      if (Notification.permission === "denied") return this.show("denied");
      const subscription = await this.subscription();
      if (subscription && Notification.permission === "granted") {
        await api("POST", apiPath("push/subscriptions"), subscription.toJSON());
        return this.show("on");
      }
      return this.show("off");
    } catch (error) {
      return this.show("off", `Couldn't read the notification settings. ${describeError(error)}`);
    }
  }

  async subscription() {
    const registration = await registerWorker();
    if (!registration) return null;
    const subscription = await registration.pushManager.getSubscription();
    // One made with another key (the server's key changed) can never be pushed to.
    if (subscription && !sameKey(subscription.options.applicationServerKey, keyBytes(this.key))) {
      await subscription.unsubscribe();
      return null;
    }
    return subscription;
  }

  async turnOn() {
    this.show("working");
    const permission = await Notification.requestPermission();
    if (permission === "denied") return this.show("denied");
    if (permission !== "granted") return this.show("off", "Notifications stay off: the browser asked, and no answer came.");
    let step = "subscribe";
    try {
      const registration = await registerWorker();
      if (!registration) throw new Error("no service worker");
      await navigator.serviceWorker.ready;
      const subscription =
        (await this.subscription()) ||
        (await withTimeout(
          registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(this.key) }),
        ));
      step = "save";
      await api("POST", apiPath("push/subscriptions"), subscription.toJSON());
      return this.show("on");
    } catch (error) {
      const why = step === "save" ? describeError(error) : error.message || String(error);
      return this.show("off", `Couldn't turn notifications on: ${why}`);
    }
  }

  async turnOff() {
    this.show("working");
    try {
      const subscription = await this.subscription();
      if (subscription) {
        const { endpoint } = subscription;
        // Unsubscribing first silences this browser even if the server can't be told now:
        // the push service then answers 410 and the server forgets the subscription.
        await subscription.unsubscribe();
        await api("DELETE", apiPath("push/subscriptions"), { endpoint });
      }
      return this.show("off");
    } catch (error) {
      return this.show("off", `Notifications are off in this browser. ${describeError(error)}`);
    }
  }

  async loadPreviews() {
    try {
      const settings = await api("GET", apiPath("settings"));
      this.previews.checked = settings.previews;
    } catch {
      // keep the box as it is; changing it will report the error
    }
  }

  async setPreviews(previews) {
    this.previews.disabled = true;
    try {
      const settings = await api("PATCH", apiPath("settings"), { previews });
      this.previews.checked = settings.previews;
    } catch (error) {
      this.previews.checked = !previews;
      this.status.textContent = `Couldn't change previews: ${describeError(error)}`;
    } finally {
      this.previews.disabled = false;
    }
  }
}
