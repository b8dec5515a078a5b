// Bottom sheets (the viewer's gifts, products, product and cart): one open at a time, over the
// lower part of the screen so the video stays in view; Close, Escape or a tap on the dimmed
// backdrop closes it. Each sheet is a <section class="sheet" hidden> with a .sheet-close button.

import { $ } from "./common.js";

const backdrop = $("#backdrop");
let current = null; // {el, onClose}

export function openSheet(id, { onClose = null, dim = true } = {}) {
  if (current && current.el.id !== id) closeSheet();
  const el = document.getElementById(id);
  el.hidden = false;
  backdrop.hidden = false;
  backdrop.classList.toggle("clear", !dim);
  current = { el, onClose };
  for (const b of document.querySelectorAll(`[aria-controls="${id}"]`)) b.setAttribute("aria-expanded", "true");
  return el;
}

export function closeSheet() {
  if (!current) return;
  const { el, onClose } = current;
  current = null;
  el.hidden = true;
  backdrop.hidden = true;
  for (const b of document.querySelectorAll(`[aria-controls="${el.id}"]`)) b.setAttribute("aria-expanded", "false");
  if (onClose) onClose();
}

export function sheetOpen(id) {
  return Boolean(current && current.el.id === id);
}

backdrop.addEventListener("click", closeSheet);
document.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape") closeSheet();
});
for (const b of document.querySelectorAll(".sheet .sheet-close")) b.addEventListener("click", closeSheet);
