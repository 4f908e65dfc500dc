// One message as a list item. Message text goes in as text nodes only (links are
// <a> elements whose text is a text node and whose href is http(s) only).

import { avatar, displayName, h, icon } from "./dom.js";
import { clockTime, fullTime, parseTime } from "./time.js";

const URL_RE = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]}]/giu;
const EMOJI_ONLY_RE = /^(?:\p{Extended_Pictographic}(?:\uFE0F|\u200D\p{Extended_Pictographic}|\p{Emoji_Modifier})*\s*){1,3}$/u;

/** Text with bare http(s) URLs made into links, as DOM nodes. */
export function linkified(text) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(URL_RE)) {
    if (match.index > last) nodes.push(document.createTextNode(text.slice(last, match.index)));
    let href = null;
    try {
      const url = new URL(match[0]);
      if (url.protocol === "http:" || url.protocol === "https:") href = url.href;
    } catch {
      href = null;
    }
    nodes.push(
      href
        ? h("a", { href, target: "_blank", rel: "noopener noreferrer nofollow ugc" }, match[0])
        : document.createTextNode(match[0]),
    );
    last = match.index + match[0].length;
  }
  if (last < text.length) nodes.push(document.createTextNode(text.slice(last)));
  return nodes;
}

function firstName(user) {
  return displayName(user).split(/\s+/u)[0];
}

function replyLabel(msg, ctx) {
  const mine = msg.sender === ctx.me.account;
  const toMe = msg.reply_to.sender === ctx.me.account;
  if (mine) return toMe ? "You replied to yourself" : `You replied to ${firstName(ctx.peer)}`;
  return toMe ? `${firstName(ctx.peer)} replied to you` : `${firstName(ctx.peer)} replied to themself`;
}

function attachmentView(attachment, ctx) {
  const url = attachment.localUrl || attachment.url;
  const sized = (el) => {
    if (attachment.width && attachment.height) {
      el.style.setProperty("--ratio", `${attachment.width} / ${attachment.height}`);
      el.classList.add("sized");
    }
    return el;
  };
  if (attachment.kind === "image") {
    const src = attachment.localUrl || attachment.thumbnail_url || attachment.url;
    const img = h("img", {
      src,
      alt: attachment.name ? `Photo ${attachment.name}` : "Photo",
      loading: "lazy",
      decoding: "async",
      width: attachment.width,
      height: attachment.height,
    });
    return sized(
      h(
        "button",
        {
          type: "button",
          class: "att att-image",
          "aria-label": "Open photo",
          onclick: () => ctx.onOpenImage(url, img.alt),
        },
        img,
      ),
    );
  }
  if (attachment.kind === "video") {
    return sized(
      h(
        "div",
        { class: "att att-video" },
        h("video", {
          src: url,
          poster: attachment.localUrl ? null : attachment.thumbnail_url,
          controls: true,
          preload: "metadata",
          playsinline: true,
          "aria-label": attachment.name ? `Video ${attachment.name}` : "Video",
        }),
      ),
    );
  }
  return h(
    "div",
    { class: "att att-audio" },
    h("audio", {
      src: url,
      controls: true,
      preload: "metadata",
      "aria-label": attachment.name ? `Audio ${attachment.name}` : "Audio",
    }),
  );
}

// A view-once photo or video: never rendered from its URL (each fetch is an opening).
// The recipient opens it on purpose; the bytes are fetched once, as a blob, and shown
// from memory (a <video> would fetch its source again for every range it plays).
function viewOnceView(msg, attachment, ctx) {
  const what = attachment.kind === "video" ? "Video" : "Photo";
  const mine = msg.sender === ctx.me.account;
  if (msg.opened || mine) {
    const label = msg.opened ? "Opened" : `${what} · view once`;
    return h("div", { class: "att att-once" }, label);
  }
  const button = h(
    "button",
    { type: "button", class: "att att-once", "aria-label": `Open view-once ${what.toLowerCase()}` },
    `View ${what.toLowerCase()}${msg.view_once > 1 ? " (one replay)" : ""}`,
  );
  button.addEventListener("click", async () => {
    button.disabled = true;
    const response = await fetch(attachment.url, { credentials: "same-origin" });
    if (!response.ok) {
      button.replaceWith(h("div", { class: "att att-once" }, "Opened"));
      return;
    }
    const blobUrl = URL.createObjectURL(await response.blob());
    if (attachment.kind === "video") {
      button.replaceWith(
        h("div", { class: "att att-video" }, h("video", { src: blobUrl, controls: true, autoplay: true, playsinline: true })),
      );
    } else {
      button.disabled = false;
      ctx.onOpenImage(blobUrl, "View-once photo");
    }
  });
  return button;
}

function reactionsView(msg, ctx) {
  if (!msg.reactions || !msg.reactions.length) return null;
  const counts = new Map();
  for (const r of msg.reactions) counts.set(r.emoji, (counts.get(r.emoji) || 0) + 1);
  const who = msg.reactions
    .map((r) => `${r.account === ctx.me.account ? "You" : displayName(ctx.peer)} ${r.emoji}`)
    .join(", ");
  const button = h(
    "button",
    {
      type: "button",
      class: "msg-reactions",
      title: who,
      "aria-label": `Reactions: ${who}. Change your reaction`,
      "aria-haspopup": "true",
      "aria-expanded": "false",
    },
    Array.from(counts.keys()).join(""),
    msg.reactions.length > 1 ? h("span", { class: "msg-reactions-count" }, String(msg.reactions.length)) : null,
  );
  button.addEventListener("click", () => ctx.onReactPicker(msg, button));
  return button;
}

function actionsView(record, ctx, mine) {
  const msg = record.msg;
  if (record.pending || msg.unsent || msg.id == null) return null;
  const react = h(
    "button",
    { type: "button", class: "icon-button small", "aria-label": "React", "aria-haspopup": "true", "aria-expanded": "false" },
    icon("smile", 18),
  );
  react.addEventListener("click", () => ctx.onReactPicker(msg, react));
  const reply = h(
    "button",
    { type: "button", class: "icon-button small", "aria-label": "Reply", onclick: () => ctx.onReply(msg) },
    icon("reply", 18),
  );
  const more = h(
    "button",
    { type: "button", class: "icon-button small", "aria-label": "More options", "aria-haspopup": "menu", "aria-expanded": "false" },
    icon("more", 18),
  );
  more.addEventListener("click", () => ctx.onMenu(msg, more));
  return h("div", { class: "msg-actions" }, mine ? [more, reply, react] : [react, reply, more]);
}

/** Build the <li> of a record; thread.js re-runs this when the message changes. */
export function renderMessage(record, ctx) {
  const msg = record.msg;
  const mine = msg.sender === ctx.me.account;
  const created = parseTime(msg.created_at);
  const row = record.el || h("li", {});
  row.className = `msg-row ${mine ? "mine" : "theirs"}`;
  if (record.pending) row.classList.add(`pending-${record.pending}`);
  row.dataset.key = record.key;
  if (msg.id != null) row.dataset.id = String(msg.id);
  if (msg.seq != null) row.dataset.seq = String(msg.seq);
  else delete row.dataset.seq;

  const parts = [];
  if (msg.reply_to && !msg.unsent) {
    const quote = msg.reply_to.unsent ? "Unsent message" : msg.reply_to.message || "Attachment";
    parts.push(
      h(
        "div",
        { class: "msg-replyto" },
        h("span", { class: "msg-replyto-label" }, icon("reply", 12), replyLabel(msg, ctx)),
        h(
          "button",
          {
            type: "button",
            class: `msg-quote${msg.reply_to.unsent ? " unsent" : ""}`,
            "aria-label": `Quoted message: ${quote}. Show it`,
            onclick: () => ctx.onQuote(msg.reply_to),
          },
          quote,
        ),
      ),
    );
  }
  if (msg.edited_at && !msg.unsent) parts.push(h("span", { class: "msg-edited" }, "Edited"));

  const content = [];
  if (msg.unsent) {
    content.push(
      h("div", { class: "bubble unsent" }, mine ? "You unsent a message" : `${firstName(ctx.peer)} unsent a message`),
    );
  } else {
    if (msg.attachments && msg.attachments.length) {
      const grid = h(
        "div",
        { class: `msg-attachments count-${Math.min(msg.attachments.length, 3)}` },
        msg.attachments.map((a) => (msg.view_once ? viewOnceView(msg, a, ctx) : attachmentView(a, ctx))),
      );
      content.push(grid);
    }
    if (msg.message) {
      const jumbo = EMOJI_ONLY_RE.test(msg.message.trim());
      const bubble = h("div", { class: `bubble${jumbo ? " jumbo" : ""}`, dir: "auto" }, linkified(msg.message));
      bubble.addEventListener("dblclick", (event) => {
        event.preventDefault();
        window.getSelection()?.removeAllRanges();
        ctx.onDoubleClick(msg, bubble);
      });
      bubble.addEventListener("mousedown", (event) => {
        if (event.detail > 1) event.preventDefault(); // no word selection on double-click
      });
      content.push(bubble);
    }
  }
  const time = h(
    "time",
    { class: "msg-time", datetime: msg.created_at || null, title: fullTime(created) },
    clockTime(created),
  );
  const contentEl = h("div", { class: "msg-content" }, content, reactionsView(msg, ctx));
  // Without hover (touch screens) a tap on the message shows its actions.
  contentEl.addEventListener("click", (event) => {
    if (!matchMedia("(hover: none)").matches || event.target.closest("button, a, video, audio")) return;
    row.classList.toggle("actions-open");
  });
  const body = h(
    "div",
    { class: "msg-body" },
    contentEl,
    h("div", { class: "msg-side" }, actionsView(record, ctx, mine), time),
  );
  parts.push(body);

  const status = h("div", { class: "msg-status", "aria-live": "polite" });
  if (record.pending === "sending") status.append(icon("clock", 12), " Sending…");
  else if (record.pending === "queued") status.append("Waiting for connection…");
  else if (record.pending === "failed") {
    status.append(
      icon("alert", 14),
      ` Not delivered${record.error ? `: ${record.error}` : "."} `,
      h("button", { type: "button", class: "link-button retry", onclick: () => ctx.onRetry(record) }, "Retry"),
    );
  }
  parts.push(status);
  record.statusEl = status;

  row.replaceChildren(
    h("div", { class: "msg-avatar" }, mine ? null : avatar(ctx.peer, 28)),
    h("div", { class: "msg-main" }, parts),
  );
  return row;
}
