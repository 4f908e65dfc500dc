// Entry point of the web client: reads the page's configuration and starts the
// inbox, the open conversation, the new-message dialog, the drop zone and the service
// worker with its notifications dialog.

import { api, setCsrfToken } from "./api.js";
import { Composer } from "./composer.js";
import { apiPath, config } from "./config.js";
import { avatar, displayName, h, toast } from "./dom.js";
import { Inbox } from "./inbox.js";
import { Notifications, registerWorker, unsubscribeOnLogout } from "./notifications.js";
import { bindDialogs, confirmDialog, menu, openPopover } from "./overlays.js";
import { Thread } from "./thread.js";

setCsrfToken(config.csrf_token);
bindDialogs();
registerWorker(); // shows Web Push notifications once they are turned on
unsubscribeOnLogout();
new Notifications({
  dialog: document.getElementById("notifications-dialog"),
  opener: document.getElementById("notifications-button"),
});

// One "reconnecting…" indicator for both sockets.
const statuses = {};
const connection = document.getElementById("connection-status");
function onStatus(name, status) {
  statuses[name] = status;
  document.body.dataset[`${name}Socket`] = status; // data-thread-socket="open", for tests
  const down = Object.values(statuses).some((s) => s === "reconnecting");
  connection.hidden = !down;
  document.body.classList.toggle("offline", down);
}

const inbox = new Inbox({
  root: document.getElementById("inbox"),
  me: config.me,
  activeAccount: config.peer?.account,
  threadUrl: config.thread_url,
  onStatus: (status) => onStatus("inbox", status),
  onChange: () => updateRequestBanner(),
});
inbox.start();

let thread = null;
let blocked = false;
if (config.peer) {
  const root = document.getElementById("thread");
  root.querySelector(".thread-head .avatar-wrap").replaceChildren(avatar(config.peer, 44));
  root.querySelector("#typing .msg-avatar").replaceChildren(avatar(config.peer, 28));
  thread = new Thread({
    root,
    me: config.me,
    peer: config.peer,
    limits: config.limits,
    onStatus: (status) => onStatus("thread", status),
  });
  const composer = new Composer({
    form: document.getElementById("composer"),
    limits: config.limits,
    peer: config.peer,
    me: config.me,
    onSend: (message) => thread.send(message),
    onEdit: (msg, text) => thread.edit(msg, text),
    onTyping: (active) => thread.sendTyping(active),
  });
  thread.composer = composer;
  thread.onBlocked = () => {
    blocked = true;
  };
  thread.start();
  bindDropZone(root, composer);
  if (!matchMedia("(pointer: coarse)").matches) composer.focus();
}

function bindDropZone(root, composer) {
  const overlay = document.getElementById("drop-overlay");
  let depth = 0;
  const hasFiles = (event) => Array.from(event.dataTransfer?.types || []).includes("Files");
  root.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth += 1;
    overlay.hidden = false;
  });
  root.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  root.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) overlay.hidden = true;
  });
  root.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth = 0;
    overlay.hidden = true;
    composer.addFiles(Array.from(event.dataTransfer.files));
  });
}

// --- conversation options: mute, delete for me, block ------------------------------------

async function conversationAction(path, success) {
  try {
    await api("POST", path);
    success();
  } catch (error) {
    toast(error.detail || "That didn't work. Try again.", { error: true });
  }
}

document.getElementById("thread-options")?.addEventListener("click", (event) => {
  const anchor = event.currentTarget;
  const account = encodeURIComponent(config.peer.account);
  const name = displayName(config.peer);
  const conversation = inbox.conversationWith(config.peer.account);
  const items = [];
  if (conversation) {
    const muted = conversation.muted;
    items.push({
      label: muted ? "Unmute messages" : "Mute messages",
      icon: "muted",
      action: () =>
        conversationAction(apiPath(`dm/${account}/${muted ? "unmute" : "mute"}`), () => {
          inbox.place({ ...conversation, muted: !muted });
          inbox.render();
          toast(muted ? "Unmuted" : "Muted: no notifications for new messages");
        }),
    });
  }
  items.push({
    label: "Delete chat",
    icon: "trash",
    danger: true,
    action: async () => {
      const ok = await confirmDialog({
        title: "Delete chat?",
        body: `The messages disappear from your inbox and history. ${name} keeps their copy.`,
        confirmLabel: "Delete",
      });
      if (ok) conversationAction(apiPath(`dm/${account}/clear`), () => location.assign(config.inbox_url));
    },
  });
  items.push(
    blocked
      ? {
          label: "Unblock",
          icon: "alert",
          action: () => conversationAction(apiPath(`users/${account}/unblock`), () => location.reload()),
        }
      : {
          label: "Block",
          icon: "alert",
          danger: true,
          action: async () => {
            const ok = await confirmDialog({
              title: `Block ${name}?`,
              body: "Neither of you will be able to message the other or see if the other is active.",
              confirmLabel: "Block",
            });
            if (!ok) return;
            thread.blockedByMe = true; // the server may close the socket (4403) before we hear back
            await conversationAction(apiPath(`users/${account}/block`), () => {
              blocked = true;
              thread.composer.disable("You blocked this account.");
            });
            if (!blocked) thread.blockedByMe = false;
          },
        },
  );
  openPopover(anchor, menu("Conversation options", items), { align: "end" });
});

// --- message requests -------------------------------------------------------------------

function updateRequestBanner() {
  const banner = document.getElementById("request-banner");
  if (!banner || !config.peer) return;
  const conversation = inbox.conversationWith(config.peer.account);
  banner.hidden = !(conversation && conversation.request);
}

document.getElementById("request-accept")?.addEventListener("click", async () => {
  try {
    await api("POST", apiPath(`dm/${encodeURIComponent(config.peer.account)}/accept`));
    document.getElementById("request-banner").hidden = true;
    const conversation = inbox.conversationWith(config.peer.account);
    if (conversation) {
      inbox.place({ ...conversation, request: false });
      inbox.render();
    }
  } catch (error) {
    toast(`Couldn't accept the request: ${error.detail || error}`, { error: true });
  }
});

// --- new message: find people by account prefix --------------------------------------

const dialog = document.getElementById("new-message-dialog");
const search = document.getElementById("new-message-search");
const results = document.getElementById("new-message-results");
let searchTimer = null;
let searchSeq = 0;

for (const button of document.querySelectorAll("[data-new-message]")) {
  button.addEventListener("click", () => {
    search.value = "";
    results.replaceChildren();
    dialog.showModal();
    search.focus();
    runSearch();
  });
}

search?.addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(runSearch, 150);
});

search?.addEventListener("keydown", (event) => {
  if (event.key === "ArrowDown") {
    event.preventDefault();
    results.querySelector("a")?.focus();
  } else if (event.key === "Enter") {
    const first = results.querySelector("a");
    if (first) {
      event.preventDefault();
      first.click();
    }
  }
});

results?.addEventListener("keydown", (event) => {
  if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
  event.preventDefault();
  const links = Array.from(results.querySelectorAll("a"));
  const index = links.indexOf(document.activeElement);
  const next = index + (event.key === "ArrowDown" ? 1 : -1);
  if (next < 0) search.focus();
  else links[Math.min(next, links.length - 1)]?.focus();
});

async function runSearch() {
  const seq = ++searchSeq;
  const q = search.value.trim().replace(/^@/u, "");
  if (!q) {
    // The server finds people by the start of their handle; it lists no one for nothing.
    results.replaceChildren(h("li", { class: "person-empty" }, "Type a name to search."));
    return;
  }
  try {
    const page = await api("GET", apiPath(`users/?q=${encodeURIComponent(q)}`));
    if (seq !== searchSeq) return;
    results.replaceChildren(
      ...page.results.map((user) =>
        h(
          "li",
          {},
          h(
            "a",
            { class: "person", href: config.thread_url.replace("ACCOUNT", encodeURIComponent(user.account)) },
            avatar(user, 44),
            h(
              "span",
              { class: "person-text" },
              h("span", { class: "person-name" }, displayName(user)),
              h("span", { class: "person-account" }, user.account),
            ),
          ),
        ),
      ),
    );
    if (!page.results.length) results.append(h("li", { class: "person-empty" }, "No account found."));
  } catch (error) {
    if (seq === searchSeq) results.replaceChildren(h("li", { class: "person-empty" }, "Search failed. Try again."));
  }
}
