// Popovers (the message menu, the reaction picker), the confirm dialog and the
// full-size image viewer. One popover at a time; Escape or a click outside closes
// it and gives focus back to the button that opened it.

import { h, icon } from "./dom.js";

let open = null;

export function closePopover({ restoreFocus = true } = {}) {
  if (!open) return;
  const { el, anchor, cleanup } = open;
  open = null;
  cleanup();
  el.remove();
  anchor.setAttribute("aria-expanded", "false");
  if (restoreFocus && anchor.isConnected) anchor.focus();
}

/** Show ``el`` next to ``anchor``; arrow keys move between its buttons. */
export function openPopover(anchor, el, { align = "center" } = {}) {
  const reopening = open && open.anchor === anchor;
  closePopover({ restoreFocus: false });
  if (reopening) return;
  el.classList.add("popover");
  document.body.append(el);
  const rect = anchor.getBoundingClientRect();
  const box = el.getBoundingClientRect();
  let left = align === "end" ? rect.right - box.width : rect.left + rect.width / 2 - box.width / 2;
  left = Math.max(8, Math.min(left, window.innerWidth - box.width - 8));
  let top = rect.top - box.height - 6;
  if (top < 8) top = rect.bottom + 6;
  el.style.left = `${left + window.scrollX}px`;
  el.style.top = `${top + window.scrollY}px`;
  anchor.setAttribute("aria-expanded", "true");
  const buttons = () => Array.from(el.querySelectorAll("button:not([disabled])"));
  const onKey = (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      closePopover();
    } else if (["ArrowDown", "ArrowUp", "ArrowLeft", "ArrowRight", "Home", "End"].includes(event.key)) {
      const list = buttons();
      const index = list.indexOf(document.activeElement);
      const forward = event.key === "ArrowDown" || event.key === "ArrowRight";
      let next = forward ? index + 1 : index - 1;
      if (event.key === "Home") next = 0;
      if (event.key === "End") next = list.length - 1;
      list[(next + list.length) % list.length]?.focus();
      event.preventDefault();
    } else if (event.key === "Tab") {
      closePopover({ restoreFocus: false });
    }
  };
  const onPointer = (event) => {
    if (!el.contains(event.target) && !anchor.contains(event.target)) closePopover({ restoreFocus: false });
  };
  const onScroll = () => closePopover({ restoreFocus: false });
  el.addEventListener("keydown", onKey);
  document.addEventListener("pointerdown", onPointer, true);
  window.addEventListener("resize", onScroll);
  document.querySelector("#messages")?.addEventListener("scroll", onScroll, { passive: true });
  open = {
    el,
    anchor,
    cleanup() {
      document.removeEventListener("pointerdown", onPointer, true);
      window.removeEventListener("resize", onScroll);
      document.querySelector("#messages")?.removeEventListener("scroll", onScroll);
    },
  };
  (el.querySelector("[aria-checked=true]") || buttons()[0])?.focus();
}

/** A menu of {label, icon, danger, action} items. */
export function menu(label, items) {
  return h(
    "div",
    { role: "menu", "aria-label": label, class: "menu" },
    items.map((item) =>
      h(
        "button",
        {
          type: "button",
          role: "menuitem",
          class: item.danger ? "menu-item danger" : "menu-item",
          onclick: () => {
            closePopover();
            item.action();
          },
        },
        h("span", {}, item.label),
        item.icon ? icon(item.icon, 18) : null,
      ),
    ),
  );
}

/** Resolve true when the person confirms; a modal <dialog>, never window.confirm. */
export function confirmDialog({ title, body, confirmLabel }) {
  const dialog = document.getElementById("confirm-dialog");
  dialog.querySelector(".dialog-title").textContent = title;
  dialog.querySelector(".dialog-body").textContent = body;
  const confirmButton = dialog.querySelector(".dialog-confirm");
  confirmButton.textContent = confirmLabel;
  const previous = document.activeElement;
  return new Promise((resolve) => {
    const done = (answer) => {
      dialog.removeEventListener("close", onClose);
      confirmButton.removeEventListener("click", onConfirm);
      if (dialog.open) dialog.close();
      if (previous && previous.isConnected) previous.focus();
      resolve(answer);
    };
    const onClose = () => done(false);
    const onConfirm = () => done(true);
    dialog.addEventListener("close", onClose);
    confirmButton.addEventListener("click", onConfirm);
    dialog.showModal();
    confirmButton.focus();
  });
}

export function openLightbox(src, alt) {
  const dialog = document.getElementById("lightbox");
  const img = dialog.querySelector("img");
  img.alt = alt || "";
  img.src = src;
  dialog.showModal();
}

export function bindDialogs() {
  for (const dialog of document.querySelectorAll("dialog")) {
    // A click on the backdrop (the dialog element itself) closes it.
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) dialog.close();
    });
    for (const button of dialog.querySelectorAll("[data-close]")) {
      button.addEventListener("click", () => dialog.close());
    }
  }
  const lightbox = document.getElementById("lightbox");
  lightbox?.addEventListener("close", () => {
    lightbox.querySelector("img").removeAttribute("src");
  });
}
