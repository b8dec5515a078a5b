// The viewer's orders on a phone: each order's way (paid -> shipped -> delivered ->
// completed), its parcels with carrier and tracking number, receipt; and the viewer's
// shipping addresses. Live: with ?room= the page holds the room's connection, where the
// buyer's private order.shipped / order.delivered arrive; it also re-reads every 5 s.
import { $, ApiError, Live, api, fill, h, money, newId, params, timeOf, toast } from "./common.js";

const token = params.get("token");
const room = params.get("room");
const WAY = ["paid", "shipped", "delivered", "completed"];
const LABEL = {
  reserved: "awaiting payment", paid: "paid, not shipped yet", shipped: "on its way", delivered: "delivered",
  completed: "completed", cancelled: "cancelled", refund_requested: "refund asked", return_requested: "return asked",
  refunded: "refunded",
};

function say(e) {
  toast(e instanceof ApiError ? e.message : String(e), "error", 6000);
}

function stateOf(order, fulfilment) {
  // the gate (Redis) knows a parcel before the orders worker wrote the order's step to SQL
  const p = fulfilment && fulfilment.progress;
  if ((order.state === "paid" || order.state === "shipped") && (p === "shipped" || p === "delivered")) return p;
  if (order.state === "delivered" && p === "completed") return p;
  return order.state;
}

function steps(state) {
  const at = WAY.indexOf(state);
  return h("div", { class: "steps", "aria-label": "progress" },
    WAY.map((s, i) => h("span", { class: at < 0 ? "" : i < at ? "done" : i === at ? "now" : "" }, s)));
}

function parcel(s) {
  const back = s.kind === "return";
  return h("div", { class: "parcel", dataset: { shipment: s.shipment_id } },
    h("b", {}, back ? "Return parcel" : `Parcel ${s.n || ""}`),
    h("span", {}, s.carrier),
    h("span", { class: "track" }, s.tracking_number),
    h("span", { class: `pill ${s.state === "delivered" ? "ok" : "warn"}` }, s.state === "delivered" ? `delivered ${timeOf(s.delivered_ms)}` : "in transit"),
    h("span", { class: "muted small" }, Object.entries(s.lines || {}).map(([k, q]) => `${q} × ${k}`).join(", ")));
}

async function confirm(orderId) {
  try {
    await api(`/api/v1/orders/${encodeURIComponent(orderId)}/confirm`, { method: "POST", body: {} });
    toast("Receipt confirmed: thank you", "ok");
    await load();
  } catch (e) {
    say(e);
  }
}

function card(order, got) {
  const st = stateOf(order, got.fulfilment);
  const ships = got.shipments || [];
  const actions = [];
  if (st === "delivered") actions.push(h("button", { class: "ok", onclick: () => confirm(order.id) }, "Confirm receipt"));
  return h("article", { class: "panel order-card", dataset: { order: order.id, state: st } },
    h("div", { class: "head" },
      h("b", {}, money(order.amount)), h("span", { class: "muted" }, `${order.qty} unit(s)`),
      h("span", { class: "pill state" }, LABEL[st] || st), h("span", { class: "grow" }),
      h("span", { class: "id" }, order.id)),
    WAY.includes(st) ? steps(st) : null,
    ships.length ? ships.map(parcel) : h("p", { class: "muted small" }, order.state === "paid" ? "The host has not shipped it yet." : ""),
    actions.length ? h("div", { class: "row" }, actions) : null);
}

let loading = null;
async function load() {
  if (loading) return loading;
  loading = (async () => {
    try {
      const { orders } = await api("/api/v1/orders?limit=20");
      const shown = orders.filter((o) => o.state !== "cancelled");
      const full = await Promise.all(shown.map((o) => api(`/api/v1/orders/${encodeURIComponent(o.id)}`).catch(() => ({}))));
      fill($("#orders"), shown.length ? shown.map((o, i) => card(o, full[i])) : h("p", { class: "muted" }, "No orders yet."));
    } catch (e) {
      fill($("#orders"), h("p", { class: "muted" }, `Could not load your orders: ${e.message}`));
    } finally {
      loading = null;
    }
  })();
  return loading;
}

async function loadAddresses() {
  try {
    const { addresses } = await api("/api/v1/me/addresses");
    fill($("#addresses"), addresses.length ? addresses.map((a) => h("li", { dataset: { address: a.id } },
      a.is_default ? h("span", { class: "pill ok" }, "default") : h("button", { onclick: () => makeDefault(a.id) }, "Make default"), " ",
      `${a.name} · ${a.phone} · ${a.line1}${a.line2 ? ", " + a.line2 : ""}, ${a.city} ${a.postal_code || ""} ${a.country}`, " ",
      h("button", { onclick: () => remove(a.id), "aria-label": "delete address" }, "Delete"))) : h("li", { class: "muted" },
      "No address yet: add one so the host can ship your orders."));
  } catch (e) {
    fill($("#addresses"), h("li", { class: "muted" }, e.message));
  }
}

async function makeDefault(id) {
  try {
    await api(`/api/v1/me/addresses/${id}`, { method: "PATCH", body: { is_default: true } });
    await loadAddresses();
  } catch (e) {
    say(e);
  }
}

async function remove(id) {
  try {
    await api(`/api/v1/me/addresses/${id}`, { method: "DELETE" });
    await loadAddresses();
  } catch (e) {
    say(e);
  }
}

$("#addr-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const body = {};
  for (const k of ["name", "phone", "line1", "city", "postal_code", "country"]) {
    const v = String(f.get(k) || "").trim();
    if (v) body[k] = v;
  }
  if (f.get("is_default")) body.is_default = true;
  try {
    await api("/api/v1/me/addresses", { method: "POST", body, headers: { "Idempotency-Key": newId("addr-") } });
    ev.target.reset();
    toast("Address saved", "ok");
    await loadAddresses();
  } catch (e) {
    say(e); // names the field: "phone: digits with an optional leading + ..."
  }
});

if (!token) {
  fill($("#orders"), h("p", {}, "This page needs ?token=<viewer token> (livecommerce dev prints one)."));
} else {
  if (room) {
    const back = $("#back");
    back.href = `/static/viewer.html?room=${encodeURIComponent(room)}&token=${encodeURIComponent(token)}`;
    back.hidden = false;
    const live = new Live(room, token, {
      history: false,
      onEvent: (env) => {
        if (env.t === "order.shipped" || env.t === "order.delivered") {
          const s = env.d && env.d.shipment;
          toast(env.t === "order.shipped" ? `Shipped: ${s ? s.carrier + " " + s.tracking_number : ""}` : "A parcel was delivered", "ok");
          load();
        } else if (env.t === "order.paid" || env.t === "order.completed" || env.t === "order.refunded") {
          load();
        }
      },
      onStatus: (st, env) => { if (st === "live" && env) fill($("#me"), env.d.user); },
    });
    live.connect();
  }
  load();
  loadAddresses();
  setInterval(load, 5000);
}
