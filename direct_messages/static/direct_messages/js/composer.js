// The message box: text (Enter sends, Shift+Enter breaks the line), the character
// limit, attachments (button, drag and drop, paste) uploaded at once with progress,
// and the reply / edit context above it.

import { describeError, uploadAttachment } from "./api.js";
import { displayName, h, icon } from "./dom.js";

const TYPING_REFRESH_MS = 3_000;
const TYPING_IDLE_MS = 4_000;
const COUNTER_FROM = 0.8; // show the counter from 80 % of the limit

function kindOf(file) {
  const type = file.type || "";
  if (type.startsWith("image/")) return "image";
  if (type.startsWith("video/")) return "video";
  if (type.startsWith("audio/")) return "audio";
  return "file";
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${Math.round(n / 1024)} KB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MB`;
}

export class Composer {
  constructor({ form, limits, peer, me, onSend, onEdit, onTyping }) {
    this.form = form;
    this.limits = limits;
    this.peer = peer;
    this.me = me;
    this.onSend = onSend;
    this.onEdit = onEdit;
    this.onTyping = onTyping;
    this.text = form.querySelector("#composer-text");
    this.counter = form.querySelector("#composer-count");
    this.sendButton = form.querySelector(".composer-send");
    this.heartButton = form.querySelector(".composer-heart");
    this.attachButton = form.querySelector(".composer-attach");
    this.fileInput = form.querySelector("#composer-file");
    this.tray = form.querySelector("#composer-tray");
    this.context = form.querySelector("#composer-context");
    this.items = [];
    this.replyTo = null;
    this.editing = null;
    this.typingActive = false;
    this.typingSentAt = 0;
    this.typingIdle = null;
    this.disabledReason = "";
    this.bind();
    this.update();
  }

  bind() {
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.text.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit();
      } else if (event.key === "Escape" && (this.replyTo || this.editing)) {
        event.preventDefault();
        this.clearContext();
      }
    });
    this.text.addEventListener("input", () => {
      this.update();
      this.signalTyping();
    });
    this.text.addEventListener("blur", () => this.stopTyping());
    this.text.addEventListener("paste", (event) => {
      const files = Array.from(event.clipboardData?.files || []);
      if (files.length) {
        event.preventDefault();
        this.addFiles(files);
      }
    });
    this.attachButton.addEventListener("click", () => this.fileInput.click());
    this.fileInput.addEventListener("change", () => {
      this.addFiles(Array.from(this.fileInput.files || []));
      this.fileInput.value = "";
    });
    this.heartButton.addEventListener("click", () => {
      this.onSend({ text: "❤️", attachments: [], replyTo: this.replyTo });
      this.clearContext();
    });
  }

  focus() {
    this.text.focus();
  }

  disable(reason) {
    this.disabledReason = reason;
    this.text.disabled = true;
    this.text.placeholder = reason;
    this.attachButton.disabled = true;
    this.update();
  }

  get uploading() {
    return this.items.some((item) => !item.attachment && !item.error);
  }

  /** Buttons, counter and height follow the text. */
  update() {
    const text = this.text.value;
    const max = this.limits.message_max_length;
    const length = Array.from(text).length;
    const over = length > max;
    const hasContent = text.trim().length > 0 || this.items.length > 0;
    this.counter.hidden = length < max * COUNTER_FROM;
    this.counter.textContent = `${length} / ${max}`;
    this.counter.classList.toggle("over", over);
    this.text.setAttribute("aria-invalid", String(over));
    const blocked = over || this.uploading || this.items.some((item) => item.error) || !!this.disabledReason;
    this.sendButton.hidden = !hasContent && !this.editing;
    this.sendButton.disabled = blocked || !hasContent;
    this.sendButton.textContent = this.editing ? "Save" : "Send";
    this.heartButton.hidden = hasContent || !!this.editing || !!this.disabledReason;
    this.text.style.height = "auto";
    this.text.style.height = `${Math.min(this.text.scrollHeight, 140)}px`;
  }

  submit() {
    if (this.disabledReason) return;
    const text = this.text.value.trim();
    const max = this.limits.message_max_length;
    if (Array.from(text).length > max) {
      this.counter.hidden = false;
      this.counter.classList.add("shake");
      setTimeout(() => this.counter.classList.remove("shake"), 400);
      return;
    }
    if (this.editing) {
      if (text && text !== this.editing.message) this.onEdit(this.editing, text);
      this.reset();
      return;
    }
    if (this.uploading || this.items.some((item) => item.error)) return;
    if (!text && !this.items.length) return;
    const attachments = this.items.map((item) => ({ ...item.attachment, localUrl: item.localUrl }));
    this.onSend({ text, attachments, replyTo: this.replyTo });
    this.reset({ keepPreviews: true });
  }

  reset({ keepPreviews = false } = {}) {
    this.stopTyping();
    this.text.value = "";
    if (!keepPreviews) this.items.forEach((item) => item.localUrl && URL.revokeObjectURL(item.localUrl));
    this.items = [];
    this.renderTray();
    this.clearContext();
    this.update();
  }

  // --- typing -----------------------------------------------------------------------

  signalTyping() {
    if (this.editing) return;
    if (!this.text.value.trim()) {
      this.stopTyping();
      return;
    }
    const now = Date.now();
    if (!this.typingActive || now - this.typingSentAt > TYPING_REFRESH_MS) {
      this.typingActive = true;
      this.typingSentAt = now;
      this.onTyping(true);
    }
    clearTimeout(this.typingIdle);
    this.typingIdle = setTimeout(() => this.stopTyping(), TYPING_IDLE_MS);
  }

  stopTyping() {
    clearTimeout(this.typingIdle);
    if (this.typingActive) {
      this.typingActive = false;
      this.onTyping(false);
    }
  }

  // --- reply and edit -----------------------------------------------------------------

  setReply(message) {
    this.editing = null;
    this.replyTo = message;
    const who = message.sender === this.me.account ? "yourself" : displayName(this.peer);
    const quote = message.message || (message.attachments?.length ? "Attachment" : "");
    this.showContext(`Replying to ${who}`, quote);
    this.focus();
  }

  setEdit(message) {
    this.replyTo = null;
    this.editing = message;
    this.text.value = message.message;
    this.showContext("Editing message", message.message);
    this.update();
    this.focus();
    this.text.setSelectionRange(this.text.value.length, this.text.value.length);
  }

  showContext(title, quote) {
    this.context.replaceChildren(
      h(
        "div",
        { class: "composer-context-text" },
        h("strong", {}, title),
        h("span", { class: "composer-context-quote" }, quote),
      ),
      h(
        "button",
        {
          type: "button",
          class: "icon-button small",
          "aria-label": this.editing ? "Cancel editing" : "Cancel reply",
          onclick: () => {
            const wasEditing = !!this.editing;
            this.clearContext();
            if (wasEditing) this.text.value = "";
            this.update();
            this.focus();
          },
        },
        icon("close", 16),
      ),
    );
    this.context.hidden = false;
    this.update();
  }

  clearContext() {
    this.replyTo = null;
    this.editing = null;
    this.context.hidden = true;
    this.context.replaceChildren();
    this.update();
  }

  // --- attachments --------------------------------------------------------------------

  addFiles(files) {
    if (this.disabledReason || this.editing) return;
    for (const file of files) {
      if (this.items.length >= this.limits.attachments_per_message) {
        this.flashTrayError(`At most ${this.limits.attachments_per_message} files per message.`);
        break;
      }
      const item = { file, kind: kindOf(file), progress: 0, attachment: null, error: "", localUrl: "" };
      if (item.kind !== "file") item.localUrl = URL.createObjectURL(file);
      if (item.kind === "file") item.error = "Only photos, videos and audio can be sent.";
      else if (file.size > this.limits.file_max_bytes) {
        item.error = `Too large (${formatBytes(file.size)}; the limit is ${formatBytes(this.limits.file_max_bytes)}).`;
      } else this.startUpload(item);
      this.items.push(item);
    }
    this.renderTray();
    this.update();
    this.focus();
  }

  startUpload(item) {
    const upload = uploadAttachment(item.file, (fraction) => {
      item.progress = fraction;
      this.updateTile(item);
    });
    item.abort = upload.abort;
    upload.promise.then(
      (attachment) => {
        item.attachment = attachment;
        this.updateTile(item);
        this.update();
      },
      (error) => {
        if (error.code === "aborted") return;
        item.error = describeError(error);
        this.updateTile(item);
        this.update();
      },
    );
  }

  removeItem(item) {
    item.abort?.();
    if (item.localUrl) URL.revokeObjectURL(item.localUrl);
    this.items = this.items.filter((other) => other !== item);
    this.renderTray();
    this.update();
    this.focus();
  }

  flashTrayError(text) {
    this.tray.hidden = false;
    const note = h("p", { class: "tray-note", role: "alert" }, text);
    this.tray.append(note);
    setTimeout(() => note.remove(), 4000);
  }

  renderTray() {
    this.tray.hidden = this.items.length === 0;
    this.tray.replaceChildren(...this.items.map((item) => this.tile(item)));
  }

  tile(item) {
    let preview;
    if (item.kind === "image") preview = h("img", { src: item.localUrl, alt: "" });
    else if (item.kind === "video") preview = h("video", { src: item.localUrl, muted: true, preload: "metadata" });
    else preview = h("span", { class: "tile-icon" }, icon(item.kind === "audio" ? "music" : "alert", 22));
    const bar = h("progress", { max: "1", value: String(item.progress), "aria-label": `Uploading ${item.file.name}` });
    const status = h("span", { class: "tile-status" });
    const el = h(
      "div",
      { class: "tile", title: item.file.name },
      h("div", { class: "tile-preview" }, preview),
      bar,
      status,
      h(
        "button",
        {
          type: "button",
          class: "tile-remove",
          "aria-label": `Remove ${item.file.name}`,
          onclick: () => this.removeItem(item),
        },
        icon("close", 12),
      ),
    );
    item.el = el;
    item.bar = bar;
    item.status = status;
    this.updateTile(item);
    return el;
  }

  updateTile(item) {
    if (!item.el) return;
    item.bar.value = item.progress;
    item.bar.hidden = !!item.attachment || !!item.error;
    item.el.classList.toggle("tile-error", !!item.error);
    item.el.classList.toggle("tile-done", !!item.attachment);
    item.status.textContent = item.error || (item.attachment ? "" : `${Math.round(item.progress * 100)}%`);
    if (item.error) item.status.setAttribute("role", "alert");
  }
}
