// The conversation list: GET <api>/inbox (Primary and Requests), kept live by
// inbox.update frames from <ws>/inbox/. Rows are keyed by room and updated in place.

import { api } from "./api.js";
import { apiPath, wsPath } from "./config.js";
import { avatar, displayName, h, icon } from "./dom.js";
import { LiveSocket, socketUrl } from "./socket.js";
import { parseTime, relativeShort } from "./time.js";

const PAGE_SIZE = 20;
const FOLDERS = ["primary", "requests"];

function kindNoun(kind, count) {
  const nouns = { image: ["a photo", "photos"], video: ["a video", "videos"], audio: ["a voice message", "audio clips"] };
  const [one, many] = nouns[kind] || ["an attachment", "attachments"];
  return count === 1 ? one : `${count} ${many}`;
}

/** "You: hi", "Sent a photo", "You unsent a message", ... */
export function previewText(message, me) {
  if (!message) return "";
  const mine = message.sender === me.account;
  if (message.unsent) return mine ? "You unsent a message" : "Unsent a message";
  const text = (message.message || "").replace(/\s+/gu, " ").trim();
  if (text) return mine ? `You: ${text}` : text;
  const attachments = message.attachments || [];
  if (attachments.length) {
    const kinds = new Set(attachments.map((a) => a.kind));
    const noun = kinds.size === 1 ? kindNoun(attachments[0].kind, attachments.length) : kindNoun("", attachments.length);
    return `${mine ? "You sent" : "Sent"} ${noun}`;
  }
  return "";
}

export class Inbox {
  constructor({ root, me, activeAccount, threadUrl, onStatus, onChange }) {
    this.root = root;
    this.me = me;
    this.activeAccount = activeAccount;
    this.threadUrl = threadUrl;
    this.onStatus = onStatus || (() => {});
    this.onChange = onChange || (() => {});
    this.list = root.querySelector("#inbox-list");
    this.empty = root.querySelector("#inbox-empty");
    this.tabs = Array.from(root.querySelectorAll("[role=tab]"));
    this.requestsCount = root.querySelector("#requests-count");
    this.folder = "primary";
    this.folders = Object.fromEntries(
      FOLDERS.map((f) => [f, { items: new Map(), cursor: null, loaded: false, loading: false }]),
    );
    this.rows = new Map();
    this.socket = null;
  }

  async start() {
    this.bindTabs();
    this.list.addEventListener("scroll", () => this.maybeLoadMore(), { passive: true });
    await Promise.all(FOLDERS.map((f) => this.loadPage(f, { reset: true })));
    this.render();
    this.socket = new LiveSocket(() => socketUrl(wsPath("inbox/")), {
      onFrame: (frame) => this.onFrame(frame),
      onStatus: (status) => this.onSocketStatus(status),
    }).start();
    setInterval(() => this.refreshTimes(), 30_000);
  }

  bindTabs() {
    for (const tab of this.tabs) {
      tab.addEventListener("click", () => this.selectFolder(tab.dataset.folder));
      tab.addEventListener("keydown", (event) => {
        if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
        const index = this.tabs.indexOf(tab);
        const next = this.tabs[(index + (event.key === "ArrowRight" ? 1 : -1) + this.tabs.length) % this.tabs.length];
        next.focus();
        this.selectFolder(next.dataset.folder);
      });
    }
  }

  selectFolder(folder) {
    if (folder === this.folder) return;
    this.folder = folder;
    for (const tab of this.tabs) {
      const selected = tab.dataset.folder === folder;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;
    }
    this.list.setAttribute("aria-labelledby", `tab-${folder}`);
    this.render();
  }

  async loadPage(folder, { reset = false } = {}) {
    const state = this.folders[folder];
    if (state.loading || (!reset && state.loaded && !state.cursor)) return;
    state.loading = true;
    try {
      const params = new URLSearchParams({ folder, limit: String(PAGE_SIZE) });
      if (!reset && state.cursor) params.set("cursor", state.cursor);
      const page = await api("GET", apiPath(`inbox?${params}`));
      if (reset) state.cursor = null;
      for (const conversation of page.results) this.place(conversation);
      if (reset || state.cursor) state.cursor = page.next_cursor;
      state.loaded = true;
    } catch (error) {
      this.showError("Couldn't load your messages. Check your connection.");
    } finally {
      state.loading = false;
    }
  }

  maybeLoadMore() {
    const state = this.folders[this.folder];
    const nearEnd = this.list.scrollTop + this.list.clientHeight > this.list.scrollHeight - 200;
    if (nearEnd && state.cursor && !state.loading) {
      this.loadPage(this.folder).then(() => this.render());
    }
  }

  onSocketStatus(status) {
    this.onStatus(status);
    if (status !== "open") return;
    // Frames may have been missed while the socket was away: reread the first pages.
    if (this.openedOnce) {
      Promise.all(FOLDERS.map((f) => this.loadPage(f, { reset: true }))).then(() => this.render());
    }
    this.openedOnce = true;
  }

  onFrame(frame) {
    if (frame.type === "inbox.update" && frame.conversation) {
      this.place(frame.conversation);
      this.render();
    }
  }

  /** Put a conversation in its folder (a request that was accepted moves to Primary).
   * A hidden request (hidden words) is in neither: this client does not list them. */
  place(conversation) {
    const folder = conversation.hidden ? null : conversation.request ? "requests" : "primary";
    for (const f of FOLDERS) {
      if (f !== folder) this.folders[f].items.delete(conversation.room);
    }
    if (!folder) return;
    const previous = this.folders[folder].items.get(conversation.room);
    if (previous && parseTime(previous.last_activity_at) > parseTime(conversation.last_activity_at)) {
      return; // an older update overtaken by a newer one
    }
    this.folders[folder].items.set(conversation.room, conversation);
  }

  conversationWith(account) {
    for (const f of FOLDERS) {
      for (const conversation of this.folders[f].items.values()) {
        if (conversation.with.account === account) return conversation;
      }
    }
    return null;
  }

  sorted(folder) {
    return Array.from(this.folders[folder].items.values()).sort(
      (a, b) => parseTime(b.last_activity_at) - parseTime(a.last_activity_at),
    );
  }

  render() {
    const conversations = this.sorted(this.folder);
    const wanted = [];
    for (const conversation of conversations) {
      let row = this.rows.get(conversation.room);
      if (!row) {
        row = h("li", { class: "conv" });
        this.rows.set(conversation.room, row);
      }
      if (row.conversation !== conversation) this.fillRow(row, conversation);
      wanted.push(row);
    }
    // Reorder without rebuilding: move only the rows that are out of place.
    let cursor = this.list.firstChild;
    for (const row of wanted) {
      if (row !== cursor) this.list.insertBefore(row, cursor);
      else cursor = cursor.nextSibling;
    }
    while (cursor) {
      const next = cursor.nextSibling;
      cursor.remove();
      cursor = next;
    }
    const requests = this.folders.requests.items.size;
    this.requestsCount.textContent = requests ? ` (${requests})` : "";
    this.empty.hidden = conversations.length > 0;
    this.empty.textContent =
      this.folder === "requests" ? "No message requests." : "No messages yet. Start a conversation with the new message button.";
    this.onChange();
  }

  fillRow(row, conversation) {
    row.conversation = conversation;
    const other = conversation.with;
    const unread = conversation.unread_count > 0;
    const active = other.account === this.activeAccount;
    const when = parseTime(conversation.last_message?.created_at || conversation.last_activity_at);
    row.className = `conv${unread ? " unread" : ""}${active ? " active" : ""}`;
    row.dataset.account = other.account || "";
    const time = h("time", { class: "conv-time", datetime: when ? when.toISOString() : null }, relativeShort(when));
    row.timeEl = time;
    row.when = when;
    const preview = previewText(conversation.last_message, this.me);
    // An erased person has no account: their conversation is listed, not opened here.
    const link = h(
      other.account ? "a" : "span",
      {
        class: "conv-link",
        href: other.account ? this.threadUrl.replace("ACCOUNT", encodeURIComponent(other.account)) : null,
        "aria-current": active ? "page" : null,
      },
      avatar(other, 56),
      h(
        "span",
        { class: "conv-text" },
        h("span", { class: "conv-name" }, displayName(other)),
        h(
          "span",
          { class: "conv-preview" },
          h("span", { class: "conv-preview-text" }, preview),
          preview ? h("span", { class: "conv-sep", "aria-hidden": "true" }, "·") : null,
          time,
        ),
      ),
      conversation.muted ? h("span", { class: "conv-muted", title: "Muted" }, icon("muted", 14, "Muted")) : null,
      unread
        ? h(
            "span",
            { class: "conv-badge" },
            h("span", { "aria-hidden": "true" }, conversation.unread_count > 99 ? "99+" : String(conversation.unread_count)),
            h("span", { class: "visually-hidden" }, ` ${conversation.unread_count} unread`),
          )
        : null,
    );
    row.replaceChildren(link);
  }

  refreshTimes() {
    for (const row of this.rows.values()) {
      if (row.timeEl) row.timeEl.textContent = relativeShort(row.when);
    }
  }

  showError(text) {
    this.empty.hidden = false;
    this.empty.textContent = text;
  }
}
