// Small DOM helpers. Text always goes in through text nodes (textContent), never as
// HTML: nothing a user typed can become markup.

const SVG_NS = "http://www.w3.org/2000/svg";

/**
 * h("button", {class: "x", type: "button", onclick: fn, "aria-label": "Close"}, "text", node)
 * Strings and numbers become text nodes; null, undefined and false children are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "text") el.textContent = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

// Icons: outline paths on a 24x24 grid, drawn with stroke="currentColor".
const ICONS = {
  send: ["M22 3 9.2 10.1", "M22 3l-7.1 18-4.2-8.3L2 9.5Z"],
  image: [
    "M4 4h16a1 1 0 0 1 1 1v14a1 1 0 0 1-1 1H4a1 1 0 0 1-1-1V5a1 1 0 0 1 1-1Z",
    "m3 16 5-5 4 4 3-3 6 6",
    "M15.5 8.5a1 1 0 1 0 0 .01",
  ],
  heart: [
    "M16.8 3.5c-2 0-3.7 1.1-4.8 2.8-1.1-1.7-2.8-2.8-4.8-2.8C4 3.5 2 6 2 8.8c0 5.2 7.6 10.4 10 11.7 2.4-1.3 10-6.5 10-11.7 0-2.8-2-5.3-5.2-5.3Z",
  ],
  smile: [
    "M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18Z",
    "M8.5 14.5s1.2 1.8 3.5 1.8 3.5-1.8 3.5-1.8",
    "M9 9.5v.5",
    "M15 9.5v.5",
  ],
  reply: ["M10 8 5 12.5 10 17", "M5.5 12.5H14a6 6 0 0 1 6 6V19"],
  more: ["M5 12h.01", "M12 12h.01", "M19 12h.01"],
  close: ["M6 6l12 12", "M18 6 6 18"],
  back: ["M15 5l-7 7 7 7"],
  compose: [
    "M12 4H6a2 2 0 0 0-2 2v12a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2v-6",
    "M18.4 2.6a2 2 0 0 1 2.9 2.9L12 14.8 8 16l1.2-4Z",
  ],
  messenger: [
    "M12 2.5C6.6 2.5 2.5 6.4 2.5 11.6c0 2.7 1.1 5 3 6.6v3.3l3-1.7c1.1.3 2.3.5 3.5.5 5.4 0 9.5-3.9 9.5-9.1S17.4 2.5 12 2.5Z",
    "m6.5 14 3.6-5 2.6 2.3L17.5 9l-3.6 5-2.6-2.3Z",
  ],
  logout: ["M15 4h3a2 2 0 0 1 2 2v12a2 2 0 0 1-2 2h-3", "M10 16l-4-4 4-4", "M6 12h10"],
  edit: ["M4 20h4L19 9l-4-4L4 16Z", "M13.5 6.5l4 4"],
  trash: ["M4 7h16", "M9 7V4h6v3", "M6 7l1 13h10l1-13"],
  copy: ["M9 9h11v11H9Z", "M5 15H4V4h11v1"],
  clock: ["M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18Z", "M12 7v5l3 2"],
  alert: ["M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18Z", "M12 7v6", "M12 16.5v.5"],
  muted: ["M18 16v-5a6 6 0 0 0-9.5-4.9", "M6 9.5V16l-2 2h13", "M10 21h4", "M3 3l18 18"],
  play: ["M7 4.5v15l13-7.5Z"],
  music: ["M9 18V5l11-2v13", "M9 18a3 3 0 1 1-6 0 3 3 0 0 1 6 0Z", "M20 16a3 3 0 1 1-6 0 3 3 0 0 1 6 0Z"],
};

export function icon(name, size = 24, label = "") {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", String(size));
  svg.setAttribute("height", String(size));
  svg.setAttribute("fill", "none");
  svg.setAttribute("stroke", "currentColor");
  svg.setAttribute("stroke-width", "1.9");
  svg.setAttribute("stroke-linecap", "round");
  svg.setAttribute("stroke-linejoin", "round");
  svg.setAttribute("class", `icon icon-${name}`);
  if (label) {
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label);
  } else {
    svg.setAttribute("aria-hidden", "true");
  }
  for (const d of ICONS[name] || []) {
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

// Avatars: the picture, else initials on a colour derived from the account.
const AVATAR_HUES = [330, 12, 28, 200, 262, 286, 170, 220];

function hueFor(account) {
  let hash = 0;
  for (const ch of account) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return AVATAR_HUES[hash % AVATAR_HUES.length];
}

export function initials(user) {
  const source = (user.name || user.account || "?").trim();
  const words = source.split(/[\s._]+/u).filter(Boolean);
  const letters = words.length > 1 ? [words[0], words[1]] : [source];
  return letters
    .map((w) => Array.from(w)[0] || "")
    .join("")
    .toUpperCase()
    .slice(0, 2);
}

export function displayName(user) {
  return (user && (user.name || user.account)) || "";
}

export function avatar(user, size = 56) {
  const el = h("span", { class: "avatar", "aria-hidden": "true" });
  el.style.setProperty("--size", `${size}px`);
  if (user && user.avatar_url) {
    el.append(h("img", { src: user.avatar_url, alt: "", width: size, height: size }));
  } else {
    el.classList.add("avatar-initials");
    el.style.setProperty("--hue", String(hueFor((user && user.account) || "?")));
    el.textContent = initials(user || { account: "?" });
  }
  return el;
}

export function uuid4() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// A short polite announcement for screen readers and a visible toast.
let toastTimer = null;
export function toast(text, { error = false } = {}) {
  let el = document.getElementById("toast");
  if (!el) return;
  el.textContent = text;
  el.classList.toggle("toast-error", error);
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    el.hidden = true;
  }, 4000);
}
