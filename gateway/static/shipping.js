// The host's (or ops') shipping console: paid orders to ship with the buyer's address and the
// units still owed, a parcel per form (carrier, tracking number, units); orders on their way
// with their parcels, which ops mark delivered (carriers call back with a signed request).
import { $, ApiError, api, fill, h, money, newId, params, timeOf, toast } from "./common.js";

const token = params.get("token");
const room = params.get("room");
let state = params.get("state") === "shipped" ? "shipped" : "paid";

function role() {
  try {
    const body = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(body + "===".slice((body.length + 3) % 4)));
  } catch {
    return {};
  }
}
const me = role();
const isOps = me.role === "ops";

function say(e) {
  toast(e instanceof ApiError ? `${e.code}: ${e.message}` : String(e), "error", 7000);
}

async function ship(order, form) {
  const f = new FormData(form);
  const lines = Object.keys(order.owed).map((sku) => ({ sku, qty: Number(f.get(`qty-${sku}`)) })).filter((l) => l.qty > 0);
  const body = { carrier: String(f.get("carrier") || "").trim(), tracking_number: String(f.get("tracking") || "").trim(), lines };
  const btn = form.querySelector("button");
  btn.disabled = true;
  try {
    const r = await api(`/api/v1/orders/${encodeURIComponent(order.order_id)}/shipments`, {
      method: "POST", body, headers: { "Idempotency-Key": form.dataset.key },
    });
    toast(`Shipped ${r.shipment.shipment_id} (${r.shipment.carrier} ${r.shipment.tracking_number})`, "ok");
    form.dataset.key = newId("ship-");
    await load();
  } catch (e) {
    say(e);
  } finally {
    btn.disabled = false;
  }
}

async function delivered(s) {
  try {
    const r = await api(`/api/v1/shipments/${encodeURIComponent(s.shipment_id)}/delivered`, { method: "POST", body: {} });
    toast(r.progress === "delivered" ? "Delivered: the order is complete on the buyer's side" : "Parcel delivered; others are on their way", "ok");
    await load();
  } catch (e) {
    say(e);
  }
}

function parcel(s) {
  return h("div", { class: "parcel", dataset: { shipment: s.shipment_id } },
    h("b", {}, s.kind === "return" ? "Return" : s.shipment_id.split(".").pop()),
    h("span", {}, s.carrier), h("span", { class: "track" }, s.tracking_number),
    h("span", { class: "muted small" }, Object.entries(s.lines || {}).map(([k, q]) => `${q} × ${k}`).join(", ")),
    s.state === "delivered" ? h("span", { class: "pill ok" }, `delivered ${timeOf(s.delivered_ms)}`)
      : isOps ? h("button", { onclick: () => delivered(s) }, "Mark delivered") : h("span", { class: "pill warn" }, "in transit"));
}

function card(o) {
  const to = o.ship_to;
  const owed = Object.entries(o.owed || {});
  let form = null;
  if (owed.length) {
    form = h("form", { class: "ship-form", dataset: { key: newId("ship-") } },
      h("label", {}, "Carrier", h("input", { name: "carrier", required: true, maxlength: 40, placeholder: "SF Express" })),
      h("label", {}, "Tracking number", h("input", { name: "tracking", required: true, maxlength: 40, placeholder: "SF1234567890" })),
      h("button", { class: "primary", type: "submit", disabled: !to }, "Ship"),
      owed.map(([sku, q]) => h("label", {}, `Units of ${sku} (owed ${q})`,
        h("input", { name: `qty-${sku}`, type: "number", min: 0, max: q, value: q, inputmode: "numeric" }))));
    form.addEventListener("submit", (ev) => { ev.preventDefault(); ship(o, ev.target); });
  }
  return h("article", { class: "panel order-card", dataset: { order: o.order_id } },
    h("div", { class: "head" },
      h("b", {}, money(o.amount)), h("span", {}, `${o.qty} unit(s)`), h("span", { class: "pill" }, o.progress),
      h("span", { class: "muted" }, `buyer ${o.user_id}`), h("span", { class: "grow" }), h("span", { class: "id" }, o.order_id)),
    to ? h("div", { class: "small ship-to" }, `Ship to: ${to.name} · ${to.phone} · ${to.line1}${to.line2 ? ", " + to.line2 : ""}, ${to.city} ${to.postal_code || ""} ${to.country}`)
      : h("div", { class: "small pill warn" }, "The buyer has no address yet: they add one on their orders page"),
    (o.shipments || []).map(parcel),
    owed.length ? form : h("p", { class: "muted small" }, "Every unit has shipped."));
}

async function load() {
  try {
    const q = new URLSearchParams({ state });
    if (room) q.set("room", room);
    const { orders } = await api(`/api/v1/fulfilment/orders?${q}`);
    fill($("#orders"), orders.length ? orders.map(card)
      : h("p", { class: "muted" }, state === "paid" ? "Nothing to ship: every paid order has gone out." : "No order on its way."));
  } catch (e) {
    fill($("#orders"), h("p", { class: "muted" }, `Could not load the orders: ${e.message}`));
  }
}

function tab(to) {
  state = to;
  $("#tab-paid").setAttribute("aria-pressed", String(to === "paid"));
  $("#tab-shipped").setAttribute("aria-pressed", String(to === "shipped"));
  fill($("#title"), to === "paid" ? "Orders to ship" : "Orders on the way");
  load();
}

if (!token) {
  fill($("#orders"), h("p", {}, "This page needs ?token=<host or ops token>&room=<room> (livecommerce dev prints them)."));
} else {
  fill($("#me"), `${me.sub || me.user || ""} (${me.role || "?"})${room ? " · " + room : ""}`);
  $("#tab-paid").addEventListener("click", () => tab("paid"));
  $("#tab-shipped").addEventListener("click", () => tab("shipped"));
  $("#reload").addEventListener("click", load);
  tab(state);
}
