// One conversation: history over HTTP, live frames over <ws>/dm/{account}/, and the
// client's half of PROTOCOL.md's delivery guarantees:
//
// * every message is keyed by seq, so a replay that overlaps what we have, or a
//   message that comes both as an HTTP response and a frame, is shown once;
// * a send is shown at once as pending under its client_id and becomes the real
//   message when its ack or its message.new arrives (whichever is first);
// * a retry reuses the client_id, so the server stores it at most once;
// * after a reconnect the socket URL carries ?after=<seq>, where seq is the highest
//   one up to which we hold every message (history pages and message.new frames,
//   which the server delivers in order; an ack or an HTTP answer can be ahead of a
//   message still in flight, so they do not move it).

import { ApiError, api, describeError, loginRedirect } from "./api.js";
import { apiPath, wsPath } from "./config.js";
import { avatar, displayName, h, toast, uuid4 } from "./dom.js";
import { renderMessage } from "./message-view.js";
import { closePopover, confirmDialog, menu, openLightbox, openPopover } from "./overlays.js";
import { LiveSocket, socketUrl } from "./socket.js";
import { parseTime, presenceLabel, sameDay, separatorLabel } from "./time.js";

const PAGE_SIZE = 30;
const ACK_TIMEOUT_MS = 15_000;
const TYPING_TIMEOUT_MS = 6_000;
const SEPARATOR_GAP_MS = 60 * 60 * 1000;
const GROUP_GAP_MS = 5 * 60 * 1000;
const STICK_DISTANCE = 80;
export const REACTIONS = ["❤️", "😂", "😮", "😢", "😡", "👍"];

export class Thread {
  constructor({ root, me, peer, limits, onStatus }) {
    this.root = root;
    this.me = me;
    this.peer = peer;
    this.limits = limits;
    this.onStatus = onStatus || (() => {});
    this.scroller = root.querySelector("#messages");
    this.list = root.querySelector("#message-list");
    this.historyStatus = root.querySelector("#history-status");
    this.typingEl = root.querySelector("#typing");
    this.presenceEl = root.querySelector("#thread-presence");
    this.jumpButton = root.querySelector("#jump-latest");
    this.records = [];
    this.bySeq = new Map();
    this.byId = new Map();
    this.byClient = new Map();
    this.separators = new Map();
    this.order = 0;
    this.syncedSeq = 0; // resume point: every message up to it is here
    this.topSeq = 0; // the highest seq we know of
    this.read = { me: 0, peer: 0 };
    this.hasMoreBefore = true;
    this.loadingOlder = false;
    this.stick = true;
    this.presence = null;
    this.composer = null;
    this.ctx = {
      me,
      peer,
      onOpenImage: (src, alt) => openLightbox(src, alt),
      onReply: (msg) => this.composer?.setReply(msg),
      onMenu: (msg, anchor) => this.openMenu(msg, anchor),
      onReactPicker: (msg, anchor) => this.openReactionPicker(msg, anchor),
      onDoubleClick: (msg, bubble) => this.toggleHeart(msg, bubble),
      onRetry: (record) => this.transmit(record),
      onQuote: (reply) => this.scrollToMessage(reply.id),
    };
  }

  async start() {
    this.scroller.addEventListener("scroll", () => this.onScroll(), { passive: true });
    new ResizeObserver(() => {
      if (this.stick) this.scrollToBottom();
    }).observe(this.list);
    document.addEventListener("visibilitychange", () => this.markRead());
    window.addEventListener("focus", () => this.markRead());
    setInterval(() => this.renderPresence(), 30_000);
    this.jumpButton.addEventListener("click", () => {
      this.stick = true;
      this.scrollToBottom();
    });
    await this.loadInitial();
    this.socket = new LiveSocket(
      () => socketUrl(wsPath(`dm/${encodeURIComponent(this.peer.account)}/?after=${this.syncedSeq}`)),
      {
        onFrame: (frame) => this.onFrame(frame),
        onStatus: (status) => this.onStatus(status),
        onFatal: (reason) => this.onFatal(reason),
      },
    ).start();
    this.loadPresence();
  }

  // --- history ------------------------------------------------------------------------

  async loadInitial() {
    for (let attempt = 0; ; attempt++) {
      try {
        const page = await api("GET", this.historyUrl({ limit: PAGE_SIZE }));
        this.historyStatus.textContent = "";
        this.hasMoreBefore = page.has_more;
        page.results.forEach((msg) => this.upsert(msg));
        for (const msg of page.results) this.syncedSeq = Math.max(this.syncedSeq, msg.seq);
        this.render();
        this.scrollToBottom();
        this.fillViewport();
        return;
      } catch (error) {
        if (error instanceof ApiError && error.status >= 400) {
          this.historyStatus.textContent = describeError(error);
          return;
        }
        this.historyStatus.textContent = "Couldn't load messages. Retrying…";
        await new Promise((resolve) => setTimeout(resolve, Math.min(8000, 500 * 2 ** attempt)));
      }
    }
  }

  historyUrl(params) {
    const query = new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)]));
    return apiPath(`dm/${encodeURIComponent(this.peer.account)}/messages?${query}`);
  }

  onScroll() {
    const distance = this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight;
    this.stick = distance < STICK_DISTANCE;
    if (this.stick) this.jumpButton.hidden = true;
    if (this.scroller.scrollTop < 300) this.loadOlder();
  }

  /** Keep loading older pages while the history does not fill the pane. */
  async fillViewport() {
    while (this.hasMoreBefore && this.scroller.scrollHeight <= this.scroller.clientHeight + 300) {
      if (!(await this.loadOlder())) return;
    }
  }

  async loadOlder() {
    if (!this.hasMoreBefore || this.loadingOlder) return false;
    const lowest = this.records.find((r) => r.msg.seq != null);
    if (!lowest) return false;
    this.loadingOlder = true;
    this.historyStatus.textContent = "Loading…";
    try {
      const page = await api("GET", this.historyUrl({ limit: PAGE_SIZE, before: lowest.msg.seq }));
      const before = this.scroller.scrollHeight;
      const top = this.scroller.scrollTop;
      this.hasMoreBefore = page.has_more;
      page.results.forEach((msg) => this.upsert(msg));
      this.render();
      this.scroller.scrollTop = top + (this.scroller.scrollHeight - before);
      return true;
    } catch (error) {
      this.historyStatus.textContent = "Couldn't load older messages.";
      return false;
    } finally {
      this.loadingOlder = false;
      if (this.historyStatus.textContent === "Loading…") this.historyStatus.textContent = "";
    }
  }

  // --- frames -------------------------------------------------------------------------

  onFrame(frame) {
    switch (frame.type) {
      case "room.joined":
        this.read.me = Math.max(this.read.me, frame.read?.[this.me.account] ?? 0);
        this.read.peer = Math.max(this.read.peer, frame.read?.[this.peer.account] ?? 0);
        this.render();
        break;
      case "sync.done":
        // A replay comes in batches: ask for the next one until the server has no more.
        if (frame.more) this.socket.send({ type: "sync", after: frame.last_seq });
        else this.afterSync();
        break;
      case "message.new":
        this.syncedSeq = Math.max(this.syncedSeq, frame.message.seq);
        this.receive(frame.message);
        break;
      case "message.ack":
        this.ack(frame);
        break;
      case "message.updated":
        this.receive(frame.message, { update: true });
        break;
      case "seen":
        if (frame.account === this.peer.account) {
          this.read.peer = Math.max(this.read.peer, frame.seq);
          this.render();
        }
        break;
      case "typing":
        if (frame.account === this.peer.account) this.showTyping(frame.active);
        break;
      case "presence":
        if (frame.account === this.peer.account) {
          this.presence = { online: frame.online, last_active_at: frame.last_active_at };
          this.renderPresence();
        }
        break;
      case "error":
        this.onError(frame);
        break;
      default:
        break;
    }
  }

  /** Caught up: send what is waiting (and what went out on a socket that has since
   * closed, or over HTTP with no answer yet) and tell the other side what we have read.
   * A send made on this connection before its replay ended is not sent twice. */
  afterSync() {
    for (const record of this.records) {
      const waiting = record.pending === "queued" || record.pending === "sending";
      if (waiting && record.sentOn !== this.socket.opened) this.transmit(record);
    }
    this.markRead();
  }

  onFatal(reason) {
    const text = {
      forbidden: this.blockedByMe ? "You blocked this account." : "You can't message this account.",
      not_found: "This account doesn't exist anymore.",
      unauthenticated: "Your session has ended. Log in again.",
    }[reason];
    this.composer?.disable(text);
    if (reason === "forbidden") this.onBlocked?.();
    this.onStatus("closed");
    if (reason === "unauthenticated") loginRedirect();
  }

  onError(frame) {
    const record = frame.ref != null ? this.byClient.get(String(frame.ref)) : null;
    if (record && record.pending) {
      this.fail(record, describeError(new ApiError(400, frame.code, frame.detail)));
      return;
    }
    toast(describeError(new ApiError(400, frame.code, frame.detail)), { error: true });
  }

  // --- the message store --------------------------------------------------------------

  index(record) {
    const msg = record.msg;
    if (msg.seq != null) this.bySeq.set(msg.seq, record);
    if (msg.id != null) this.byId.set(msg.id, record);
    if (msg.client_id && msg.sender === this.me.account) this.byClient.set(msg.client_id, record);
    if (msg.seq != null) this.topSeq = Math.max(this.topSeq, msg.seq);
  }

  /** Add or replace a server Message; returns its record. */
  upsert(msg) {
    let record = this.bySeq.get(msg.seq);
    if (!record && msg.sender === this.me.account) record = this.byClient.get(msg.client_id);
    if (record) {
      this.settle(record);
      record.msg = msg;
    } else {
      record = { key: `m${msg.seq}`, msg, pending: null, order: this.order++, el: null, dirty: true };
      this.records.push(record);
    }
    record.dirty = true;
    record.full = true;
    this.index(record);
    return record;
  }

  settle(record) {
    clearTimeout(record.timer);
    if (record.pending) {
      record.pending = null;
      record.error = "";
    }
  }

  /** A Message from a frame or an HTTP response: new, a duplicate, or an update. */
  receive(msg, { update = false } = {}) {
    const known =
      this.bySeq.get(msg.seq) || (msg.sender === this.me.account ? this.byClient.get(msg.client_id) : null);
    if (update ? !known : known && known.full) return;
    this.upsert(msg);
    if (update) this.refreshQuotesOf(msg);
    const fromPeer = !known && msg.sender === this.peer.account;
    if (fromPeer) this.showTyping(false);
    const wasStuck = this.stick;
    this.render();
    if (fromPeer && !wasStuck) this.jumpButton.hidden = false;
    if (fromPeer) this.markRead();
  }

  /** Replies quote an edited or unsent message as it is now. */
  refreshQuotesOf(msg) {
    for (const record of this.records) {
      const quote = record.msg.reply_to;
      if (quote && quote.id === msg.id) {
        record.msg.reply_to = { ...quote, message: msg.unsent ? "" : msg.message.slice(0, 100), unsent: msg.unsent };
        record.dirty = true;
      }
    }
  }

  ack(frame) {
    const record = this.byClient.get(frame.client_id);
    if (!record || !record.pending) return;
    this.settle(record);
    Object.assign(record.msg, { id: frame.id, seq: frame.seq, created_at: frame.created_at });
    record.dirty = true;
    this.index(record);
    this.render();
  }

  // --- sending ------------------------------------------------------------------------

  /** Show the message at once, then send it. */
  send({ text, attachments, replyTo }) {
    const clientId = uuid4();
    const msg = {
      id: null,
      seq: null,
      sender: this.me.account,
      message: text,
      attachments,
      client_id: clientId,
      reply_to: replyTo
        ? {
            id: replyTo.id,
            seq: replyTo.seq,
            sender: replyTo.sender,
            message: (replyTo.message || "").slice(0, 100),
            unsent: false,
          }
        : null,
      created_at: new Date().toISOString(),
      edited_at: null,
      unsent: false,
      reactions: [],
    };
    const record = { key: `c${clientId}`, msg, pending: "sending", order: this.order++, el: null, dirty: true };
    record.frame = {
      type: "message.send",
      client_id: clientId,
      message: text,
      attachment_ids: attachments.map((a) => a.id),
    };
    if (replyTo) record.frame.reply_to = replyTo.id;
    this.records.push(record);
    this.byClient.set(clientId, record);
    this.stick = true;
    this.render();
    this.scrollToBottom();
    this.transmit(record);
  }

  /** (Re)send a pending record: over the socket if it is open, else over HTTP. */
  transmit(record) {
    clearTimeout(record.timer);
    record.pending = "sending";
    record.error = "";
    record.dirty = true;
    this.render();
    record.sentOn = null;
    if (this.socket?.send(record.frame)) {
      record.sentOn = this.socket.opened;
      record.timer = setTimeout(() => this.fail(record, "no answer from the server."), ACK_TIMEOUT_MS);
      return;
    }
    const { type, ...body } = record.frame;
    api("POST", apiPath(`dm/${encodeURIComponent(this.peer.account)}/messages`), body).then(
      (msg) => this.receive(msg),
      (error) => {
        if (!record.pending) return;
        if (error.status === 0) {
          record.pending = "queued"; // sent again when the socket is back
          record.dirty = true;
          this.render();
        } else this.fail(record, describeError(error));
      },
    );
  }

  fail(record, reason) {
    if (!record.pending) return;
    clearTimeout(record.timer);
    record.pending = "failed";
    record.error = reason;
    record.dirty = true;
    this.render();
  }

  edit(msg, text) {
    if (!this.socket?.send({ type: "message.edit", id: msg.id, message: text })) {
      toast("Not connected. Try again in a moment.", { error: true });
    }
  }

  async unsend(msg) {
    const ok = await confirmDialog({
      title: "Unsend message?",
      body: "Unsending will remove the message for everyone. People may have seen it already.",
      confirmLabel: "Unsend",
    });
    if (ok && !this.socket?.send({ type: "message.unsend", id: msg.id })) {
      toast("Not connected. Try again in a moment.", { error: true });
    }
  }

  react(msg, emoji) {
    const mine = (msg.reactions || []).find((r) => r.account === this.me.account);
    const frame =
      mine && mine.emoji === emoji ? { type: "reaction.clear", id: msg.id } : { type: "reaction.set", id: msg.id, emoji };
    if (!this.socket?.send(frame)) toast("Not connected. Try again in a moment.", { error: true });
  }

  toggleHeart(msg, bubble) {
    if (msg.id == null || msg.unsent) return;
    this.react(msg, "❤️");
    bubble.classList.remove("pop");
    void bubble.offsetWidth;
    bubble.classList.add("pop");
  }

  sendTyping(active) {
    this.socket?.send({ type: "typing", active });
  }

  markRead() {
    if (document.visibilityState !== "visible" || !this.socket?.isOpen) return;
    if (this.topSeq > this.read.me) {
      const hasUnreadFromPeer = this.records.some(
        (r) => r.msg.seq > this.read.me && r.msg.sender === this.peer.account,
      );
      this.read.me = this.topSeq;
      if (hasUnreadFromPeer) this.socket.send({ type: "read", seq: this.topSeq });
    }
  }

  // --- menus --------------------------------------------------------------------------

  openMenu(msg, anchor) {
    const mine = msg.sender === this.me.account;
    const age = Date.now() - parseTime(msg.created_at).getTime();
    const items = [{ label: "Reply", icon: "reply", action: () => this.composer?.setReply(msg) }];
    if (msg.message) {
      items.push({
        label: "Copy",
        icon: "copy",
        action: () => navigator.clipboard?.writeText(msg.message).then(() => toast("Copied")),
      });
    }
    if (mine && msg.message && age < this.limits.edit_window_seconds * 1000) {
      items.push({ label: "Edit", icon: "edit", action: () => this.composer?.setEdit(msg) });
    }
    if (mine) items.push({ label: "Unsend", icon: "trash", danger: true, action: () => this.unsend(msg) });
    openPopover(anchor, menu("Message options", items), { align: mine ? "end" : "center" });
  }

  openReactionPicker(msg, anchor) {
    const mine = (msg.reactions || []).find((r) => r.account === this.me.account);
    const picker = h(
      "div",
      { role: "group", "aria-label": "Reactions", class: "reaction-picker" },
      REACTIONS.map((emoji) =>
        h(
          "button",
          {
            type: "button",
            class: "reaction-choice",
            "aria-label": mine?.emoji === emoji ? `Remove ${emoji}` : `React ${emoji}`,
            "aria-checked": mine?.emoji === emoji ? "true" : null,
            role: "menuitemradio",
            onclick: () => {
              closePopover();
              this.react(msg, emoji);
            },
          },
          emoji,
        ),
      ),
    );
    openPopover(anchor, picker);
  }

  scrollToMessage(id) {
    const record = this.byId.get(id);
    if (!record || !record.el) {
      toast("That message isn't loaded.");
      return;
    }
    record.el.scrollIntoView({ block: "center", behavior: "smooth" });
    record.el.classList.remove("flash");
    void record.el.offsetWidth;
    record.el.classList.add("flash");
  }

  // --- presence and typing ------------------------------------------------------------

  async loadPresence() {
    try {
      this.presence = await api("GET", apiPath(`users/${encodeURIComponent(this.peer.account)}/presence`));
    } catch {
      this.presence = null;
    }
    this.renderPresence();
  }

  renderPresence() {
    if (!this.presenceEl) return;
    const label = presenceLabel(this.presence);
    this.presenceEl.textContent = label || this.peer.account;
    this.presenceEl.classList.toggle("online", !!this.presence?.online);
    this.root.querySelector(".thread-head .avatar-wrap")?.classList.toggle("online", !!this.presence?.online);
  }

  showTyping(active) {
    clearTimeout(this.typingTimer);
    const changed = this.typingEl.hidden === active;
    this.typingEl.hidden = !active;
    if (active) this.typingTimer = setTimeout(() => this.showTyping(false), TYPING_TIMEOUT_MS);
    if (changed && active && this.stick) this.scrollToBottom();
  }

  // --- rendering ----------------------------------------------------------------------

  sortRecords() {
    this.records.sort((a, b) => {
      const sa = a.msg.seq ?? Infinity;
      const sb = b.msg.seq ?? Infinity;
      return sa === sb ? a.order - b.order : sa - sb;
    });
  }

  separatorFor(record, date) {
    let el = this.separators.get(record.key);
    if (!el) {
      el = h("li", { class: "day-separator" }, h("time", {}));
      this.separators.set(record.key, el);
    }
    const time = el.firstChild;
    time.dateTime = date.toISOString();
    time.textContent = separatorLabel(date);
    return el;
  }

  render() {
    this.sortRecords();
    const nodes = [];
    if (!this.hasMoreBefore) nodes.push(this.profileHeader());
    const count = this.records.length;
    const starts = new Array(count);
    let previous = null;
    let lastSeenIndex = -1;
    for (let i = 0; i < count; i++) {
      const record = this.records[i];
      const date = parseTime(record.msg.created_at) || new Date();
      let starts_group = true;
      if (!previous || !sameDay(previous.date, date) || date - previous.date > SEPARATOR_GAP_MS) {
        nodes.push(this.separatorFor(record, date));
      } else {
        starts_group = previous.sender !== record.msg.sender || date - previous.date > GROUP_GAP_MS;
      }
      starts[i] = starts_group || !!record.msg.reply_to;
      if (record.dirty || !record.el) {
        const attachmentsBefore = record.el?.querySelector(".msg-attachments");
        // (A view-once file that is now opened shows otherwise: not the same attachments.)
        const keys = (record.msg.attachments || []).map((a) => a.id).join(",") + (record.msg.opened ? ":opened" : "");
        record.el = renderMessage(record, this.ctx);
        // Keep playing media (and loaded pictures) when only text or reactions changed.
        const attachmentsAfter = record.el.querySelector(".msg-attachments");
        if (attachmentsBefore && attachmentsAfter && record.attachmentKeys === keys && !record.pending) {
          attachmentsAfter.replaceWith(attachmentsBefore);
        }
        record.attachmentKeys = record.pending ? null : keys;
        record.dirty = false;
      }
      nodes.push(record.el);
      previous = { date, sender: record.msg.sender };
    }
    const last = this.records[count - 1];
    if (last && last.msg.sender === this.me.account && !last.pending && last.msg.seq != null) {
      if (last.msg.seq <= this.read.peer) lastSeenIndex = count - 1;
    }
    for (let i = 0; i < count; i++) {
      const record = this.records[i];
      const el = record.el;
      el.classList.toggle("group-start", starts[i]);
      el.classList.toggle("group-end", i === count - 1 || starts[i + 1]);
      const seen = i === lastSeenIndex;
      el.classList.toggle("seen", seen);
      if (!record.pending) record.statusEl.textContent = seen ? "Seen" : "";
    }
    this.reconcile(nodes);
  }

  reconcile(nodes) {
    let cursor = this.list.firstChild;
    for (const node of nodes) {
      if (node !== cursor) this.list.insertBefore(node, cursor);
      else cursor = cursor.nextSibling;
    }
    while (cursor) {
      const next = cursor.nextSibling;
      cursor.remove();
      cursor = next;
    }
    if (this.stick) this.scrollToBottom();
  }

  profileHeader() {
    if (!this.profileEl) {
      this.profileEl = h(
        "li",
        { class: "thread-profile" },
        avatar(this.peer, 96),
        h("strong", { class: "thread-profile-name" }, displayName(this.peer)),
        h("span", { class: "thread-profile-account" }, this.peer.account),
      );
    }
    return this.profileEl;
  }

  scrollToBottom() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }
}
