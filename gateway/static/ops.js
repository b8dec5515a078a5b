// Ops dashboard: /static/ops.html?token=OPS_JWT
//
// Polls GET /api/v1/ops/overview and /api/v1/ops/series (ops role) once a second and draws
// live canvas charts (online, comments/s and gifts/s, GMV, errors/s, orders by state, the
// conversion funnel, stock burn-down per campaign), the rooms and campaigns tables and the
// alerts. The same alerts are Prometheus gauges (lc_alert_active{alert}) on /metrics.
// The moderation audit log (GET /api/v1/moderation/audit, ops only): who did what to whom,
// why and when, filtered by room and action, 20 a page, refreshed every 5 s.
// The charts' time range (10 min, 1 h, 6 h, 24 h) is a picker: `range_s` in each series
// request (and `?range=` in the page's URL, so a reload keeps it); a range past 10 minutes
// comes folded into steps (10 s, 1 min, 4 min), each point stamped with its step's start and
// the last one still filling, so a point that comes again replaces the one with its time.
// Fulfilment and payments (every 5 s): paid orders still to ship and the parcels on their way
// (GET /api/v1/fulfilment/orders), the payment provider's callbacks with their signature
// check and outcome (GET /api/v1/payments/callbacks) and refunds to the original method.

import { BarChart, LineChart } from "./charts.js";
import { $, api, fill, fmtInt, h, money, params, timeOf, toast } from "./common.js";

const RANGES = [600, 3600, 21600, 86400];
let rangeS = RANGES.includes(Number(params.get("range"))) ? Number(params.get("range")) : 600;
const WINDOW = rangeS * 1000;
const charts = {
  online: new LineChart($("#c-online"), { title: "online", series: [{ name: "total" }], windowMs: WINDOW }),
  rates: new LineChart($("#c-rates"), { title: "per second", series: [{ name: "comments" }, { name: "gifts" }], windowMs: WINDOW }),
  gmv: new LineChart($("#c-gmv"), { title: "GMV ($)", series: [{ name: "gmv", color: "#81c784" }], windowMs: WINDOW }),
  errors: new LineChart($("#c-errors"), { title: "errors/s · pay time-outs/min", series: [{ name: "errors", color: "#e57373" }, { name: "timeouts", color: "#ffb74d" }], windowMs: WINDOW }),
  orders: new BarChart($("#c-orders"), { title: "orders by state (recent campaigns)" }),
  funnel: new BarChart($("#c-funnel"), { title: "conversion funnel", colors: ["#4fc3f7", "#ffb74d", "#81c784"] }),
  dau: new BarChart($("#c-dau"), { title: "daily active viewers (14 days)" }),
  acq: new BarChart($("#c-acq"), { title: "growth funnel (all channels, 30 days)" }),
  burn: new LineChart($("#c-burn"), { title: "stock burn-down (units left per campaign)", series: [], windowMs: WINDOW, stepped: true }),
};

let since = 0;
let sinceCommerce = 0;
let failures = 0;

// a point at a time already drawn replaces it (a long range's last step fills up)
function upsert(chart, ts, values) {
  const pts = chart.points;
  for (let i = pts.length - 1; i >= 0 && pts[i][0] >= ts; i--) {
    if (pts[i][0] === ts) {
      pts[i] = [ts, { ...pts[i][1], ...values }];
      return;
    }
  }
  pts.push([ts, values]);
}

function setRange(r) {
  rangeS = r;
  since = 0;
  sinceCommerce = 0;
  for (const c of Object.values(charts)) {
    if (!(c instanceof LineChart)) continue;
    c.windowMs = r * 1000;
    c.points = [];
    c.draw();
  }
  for (const b of document.querySelectorAll("#range button")) b.setAttribute("aria-pressed", String(Number(b.dataset.range) === r));
  const q = new URLSearchParams(location.search);
  q.set("range", String(r));
  history.replaceState(null, "", `${location.pathname}?${q}`);
}

for (const b of document.querySelectorAll("#range button")) b.addEventListener("click", () => setRange(Number(b.dataset.range)));

function setText(id, v) {
  document.getElementById(id).textContent = v;
}

function addFast(points) {
  for (const p of points) {
    const top = {};
    for (const [room, r] of Object.entries(p.rooms || {})) {
      top[room] = r.online;
      charts.online.ensureSeries(room);
    }
    upsert(charts.online, p.ts, { total: p.online, ...top });
    upsert(charts.rates, p.ts, { comments: p.comments_per_s, gifts: p.gifts_per_s });
    upsert(charts.errors, p.ts, { errors: p.errors_per_s });
    since = Math.max(since, p.ts);
  }
}

function addCommerce(points) {
  for (const p of points) {
    upsert(charts.gmv, p.ts, { gmv: p.gmv / 100 });
    upsert(charts.errors, p.ts, { timeouts: p.timeouts_last_min });
    for (const sale of Object.keys(p.remaining || {})) charts.burn.ensureSeries(sale);
    upsert(charts.burn, p.ts, p.remaining || {});
    sinceCommerce = Math.max(sinceCommerce, p.ts);
  }
}

function trim(chart) {
  const cut = Date.now() - chart.windowMs;
  while (chart.points.length > 2 && chart.points[0][0] < cut) chart.points.shift();
  chart.points.sort((a, b) => a[0] - b[0]);
  chart.draw();
}

function renderAlerts(alerts) {
  // all normal: one compact row of green chips (the page's first screen is for the numbers);
  // anything firing: every alert as a full card
  const calm = !alerts.some((a) => a.active);
  $("#alerts").classList.toggle("calm", calm);
  if (calm) {
    fill($("#alerts"), alerts.map((a) => h("div", { class: "alert", dataset: { alert: a.alert }, title: a.help },
      h("span", { class: "title" }, `🟢 ${a.alert}`), h("span", { class: "small muted" }, ` · ${a.message}`))));
    return;
  }
  fill($("#alerts"), alerts.map((a) => h("div", { class: `alert ${a.active ? "active" : ""}`, dataset: { alert: a.alert } },
    h("div", { class: "title" }, `${a.active ? "🔴" : "🟢"} ${a.alert}`),
    h("div", { class: "small" }, a.message),
    h("div", { class: "small muted" }, a.active && a.since_ms ? `firing since ${timeOf(a.since_ms)} · ` : "", a.help))));
}

function orderText(orders) {
  const o = orders || {};
  return ["reserved", "paid", "cancelled"].map((s) => `${s[0].toUpperCase()}${o[s] || 0}`).join(" · ");
}

function renderRooms(rooms) {
  fill($("#rooms"), rooms.length ? rooms.map((r) => h("tr", { dataset: { room: r.room } },
    h("td", {}, h("b", {}, r.room), r.title ? h("div", { class: "small muted" }, r.title) : null),
    h("td", {}, h("span", { class: `pill ${r.state === "live" ? "live" : ""}` }, r.state)),
    h("td", { class: "num" }, fmtInt(r.online)),
    r.state === "live" ? h("td", { class: "num" }, fmtInt(r.peak_online))
      : h("td", { class: "num muted", title: "the peak of the room's last show: it counts while a show is live" },
        r.peak_online ? `${fmtInt(r.peak_online)} (last show)` : "–"),
    h("td", { class: "num" }, r.comments_per_s.toFixed(1)),
    h("td", { class: "num" }, r.gifts_per_s.toFixed(1)),
    h("td", { class: "num" }, money(r.gmv)),
    h("td", { class: "small" }, orderText(r.orders)),
    h("td", { class: "small" }, `${fmtInt(r.funnel.viewers)} → ${fmtInt(r.funnel.buyers)} → ${fmtInt(r.funnel.paid)}`)))
    : h("tr", {}, h("td", { colspan: "9", class: "muted" }, "No rooms seen in the last 15 minutes.")));
}

function renderCampaigns(campaigns) {
  fill($("#campaigns"), campaigns.length ? campaigns.map((c) => {
    const rem = c.remaining ?? 0;
    const pct = c.stock ? (100 * rem) / c.stock : 0;
    return h("tr", { dataset: { sale: c.sale_id } },
      h("td", {}, h("code", {}, c.sale_id), h("div", { class: "small muted" }, c.product_name || c.product_id)),
      h("td", {}, c.room),
      h("td", {}, h("span", { class: `pill ${c.state === "live" ? "live" : c.state === "sold_out" ? "bad" : ""}` }, c.state)),
      h("td", {}, h("div", { class: "stockbar", style: { width: "120px", margin: "0" } }, h("div", { style: { width: `${pct}%` } })),
        h("span", { class: "small" }, `${fmtInt(c.remaining)} / ${fmtInt(c.stock)}`)),
      h("td", { class: "num" }, fmtInt(c.reserved)),
      h("td", { class: "num" }, fmtInt(c.paid)),
      h("td", { class: "num" }, c.sql ? `${fmtInt(c.sql.reserved)} / ${fmtInt(c.sql.paid)}` : "–"),
      h("td", { class: "num" }, c.drift_units ? h("span", { class: "pill warn" }, fmtInt(c.drift_units)) : "0"),
      h("td", { class: "num" }, money(c.gmv)),
      h("td", {}, h("button", { class: "small", onclick: () => inventory(c.sale_id) }, "Check orders")));
  }) : h("tr", {}, h("td", { colspan: "10", class: "muted" }, "No campaigns yet.")));
}

async function inventory(sale) {
  const pre = $("#inventory");
  pre.hidden = false;
  try {
    const r = await api(`/api/v1/ops/inventory/${encodeURIComponent(sale)}`);
    pre.textContent = `${sale}: conserved=${r.conserved} redis=${JSON.stringify(r.redis)} sql=${JSON.stringify(r.sql)}\n` +
      (r.drift.length ? r.drift.map((d) => `  ${d.order_id}: redis ${d.redis} / sql ${d.sql}`).join("\n") : "  every Redis hold has its SQL order");
  } catch (e) {
    pre.textContent = `${sale}: ${e.code} ${e.message}`;
  }
}

async function poll() {
  try {
    // the live range asks for what came after the last sample; a longer one also for its last
    // step again (it was still filling)
    const after = rangeS === 600 ? Math.min(since, sinceCommerce || since) : Math.max(0, Math.min(since, sinceCommerce || since) - 1);
    const asked = rangeS;
    const [ov, series] = await Promise.all([api("/api/v1/ops/overview"), api(`/api/v1/ops/series?since=${after}&range_s=${asked}`)]);
    failures = 0;
    if (asked !== rangeS) return; // the range changed meanwhile: the next poll draws it
    addFast(series.fast);
    addCommerce(series.commerce);
    Object.values(charts).forEach((c) => (c instanceof LineChart ? trim(c) : null));
    const t = ov.totals;
    setText("t-online", fmtInt(t.online));
    setText("t-cps", t.comments_per_s.toFixed(1));
    setText("t-gps", t.gifts_per_s.toFixed(1));
    setText("t-gmv", money(t.gmv));
    setText("t-eps", t.errors_per_s.toFixed(2));
    setText("t-timeouts", fmtInt(t.timeouts_last_min));
    setText("nodes", `${ov.nodes} gateway node(s) · served by ${ov.node} · ${timeOf(ov.ts)}`);
    const firing = ov.alerts.filter((a) => a.active).length;
    const st = $("#status");
    st.textContent = firing ? `${firing} alert(s) firing` : "all normal";
    st.className = `pill ${firing ? "bad" : "ok"}`;
    renderAlerts(ov.alerts);
    renderRooms(ov.rooms);
    renderCampaigns(ov.campaigns);
    const o = t.orders || {};
    charts.orders.set(["reserved", "paid", "cancelled", "refunded"].map((s) => ({ label: s, value: o[s] || 0 })));
    charts.funnel.set([{ label: "viewers", value: t.funnel.viewers }, { label: "buyers", value: t.funnel.buyers }, { label: "paid", value: t.funnel.paid }]);
  } catch (e) {
    failures += 1;
    const st = $("#status");
    st.textContent = e.status === 403 || e.status === 401 ? "needs an ops token" : `error: ${e.message}`;
    st.className = "pill bad";
    if (failures === 1) toast(`ops data: ${e.code} ${e.message}`, "error");
  } finally {
    setTimeout(poll, failures ? Math.min(10000, 1000 * 2 ** failures) : 1000);
  }
}

// growth analytics (issue 10): slower data, refreshed every 30 s; a failure here never
// disturbs the live charts above
async function pollGrowth() {
  try {
    const [daily, funnel] = await Promise.all([api("/api/v1/growth/daily?days=14"), api("/api/v1/growth/funnel")]);
    charts.dau.set(daily.days.map((d) => ({ label: d.day.slice(5), value: d.active })));
    charts.acq.set(funnel.steps.map((step) => ({ label: step.replace("_", " "), value: funnel.total[step] || 0 })));
  } catch (e) {
    // the growth worker may not run in this deployment; the live dashboard goes on
  } finally {
    setTimeout(pollGrowth, 30000);
  }
}

// ------------------------------------------------------------------ moderation audit log
const AUDIT_ACTIONS = ["moderator.add", "moderator.remove", "mute", "unmute", "kick", "ban", "unban", "comment.delete", "chat",
  "platform.ban", "platform.unban", "report.dismiss"];
const AUDIT_PAGE = 20;
let auditOffset = 0;
for (const a of AUDIT_ACTIONS) $("#audit-action").append(h("option", { value: a }, a));

function untilText(e) {
  if (e.for_good) return "for good";
  return e.until_ms ? timeOf(e.until_ms) : "";
}

async function loadAudit() {
  const q = new URLSearchParams({ limit: String(AUDIT_PAGE), offset: String(auditOffset) });
  if ($("#audit-room").value.trim()) q.set("room", $("#audit-room").value.trim());
  if ($("#audit-action").value) q.set("action", $("#audit-action").value);
  try {
    const r = await api(`/api/v1/moderation/audit?${q}`);
    fill($("#audit"), r.entries.length ? r.entries.map((e) => h("tr", { dataset: { audit: e.id } },
      h("td", {}, timeOf(e.ts_ms)),
      h("td", {}, e.room || "platform"),
      h("td", {}, `${e.actor} (${e.actor_role})`),
      h("td", {}, h("code", {}, e.action)),
      h("td", {}, e.target || "", e.seq ? h("span", { class: "small muted" }, ` #${e.seq}`) : null),
      h("td", {}, untilText(e)),
      h("td", {}, e.reason || "", e.report_id ? h("span", { class: "small muted" }, ` (report ${e.report_id})`) : null),
    )) : h("tr", {}, h("td", { colspan: "7", class: "muted" }, "No moderation actions.")));
    $("#audit-older").disabled = r.entries.length < AUDIT_PAGE;
    $("#audit-newer").disabled = auditOffset === 0;
  } catch (e) {
    fill($("#audit"), h("tr", {}, h("td", { colspan: "7", class: "muted" }, `audit log: ${e.code} ${e.message}`)));
  }
}

$("#audit-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  auditOffset = 0;
  loadAudit();
});
$("#audit-older").addEventListener("click", () => {
  auditOffset += AUDIT_PAGE;
  loadAudit();
});
$("#audit-newer").addEventListener("click", () => {
  auditOffset = Math.max(0, auditOffset - AUDIT_PAGE);
  loadAudit();
});

// ------------------------------------------------------------------ fulfilment and payments
$("#to-ship").href = `shipping.html?token=${encodeURIComponent(params.get("token") || "")}`;

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 120 ? `${s} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
}

function parcelText(s) {
  return `${s.carrier} ${s.tracking_number}${s.state === "delivered" ? " ✓ delivered" : " · in transit"}`;
}

async function loadFulfilment() {
  try {
    const [toShip, onWay] = await Promise.all([api("/api/v1/fulfilment/orders?state=paid"), api("/api/v1/fulfilment/orders?state=shipped")]);
    const owed = (o) => Object.values(o.owed || {}).reduce((a, b) => a + b, 0);
    setText("f-toship", fmtInt(toShip.orders.length));
    setText("f-owed", fmtInt(toShip.orders.reduce((n, o) => n + owed(o), 0)));
    setText("f-onway", fmtInt(onWay.orders.length));
    const rows = new Map();
    for (const o of [...toShip.orders, ...onWay.orders]) rows.set(o.order_id, o);
    const list = [...rows.values()].sort((a, b) => a.created_ms - b.created_ms).slice(0, 30);
    fill($("#shipments"), list.length ? list.map((o) => h("tr", { dataset: { order: o.order_id } },
      h("td", {}, h("code", {}, o.order_id)),
      h("td", {}, o.room_id),
      h("td", {}, o.user_id, o.ship_to ? null : h("span", { class: "pill warn small" }, " no address")),
      h("td", {}, h("span", { class: `pill ${o.progress === "unshipped" ? "warn" : "ok"}` }, o.progress)),
      h("td", { class: "num" }, money(o.amount)),
      h("td", { class: "small" },
        owed(o) ? `owes ${Object.entries(o.owed).map(([k, q]) => `${q} × ${k}`).join(", ")}` : "",
        (o.shipments || []).map((sh) => h("div", { class: "parcel-line" }, parcelText(sh)))),
      h("td", { class: "small" }, ago(o.created_ms))))
      : h("tr", {}, h("td", { colspan: "7", class: "muted" }, "Nothing to ship: every paid order is on its way.")));
  } catch (e) {
    fill($("#shipments"), h("tr", {}, h("td", { colspan: "7", class: "muted" }, `fulfilment: ${e.code} ${e.message}`)));
  }
}

function signatureCell(c) {
  return c.verified ? h("span", { class: "pill ok" }, "✓ verified")
    : h("span", { class: "pill bad", title: "the HMAC over timestamp and body did not check out" }, `✗ ${c.reason || "refused"}`);
}

async function loadPayments() {
  try {
    const [cbs, refunds] = await Promise.all([api("/api/v1/payments/callbacks?limit=20"), api("/api/v1/payments/refunds?limit=10")]);
    fill($("#callbacks"), cbs.callbacks.length ? cbs.callbacks.map((c) => h("tr", { dataset: { callback: c.id } },
      h("td", {}, timeOf(c.ts)),
      h("td", {}, signatureCell(c)),
      h("td", {}, c.type ? h("code", {}, c.type) : h("span", { class: "muted" }, `${fmtInt(c.bytes)} bytes`), c.duplicate ? h("span", { class: "small muted" }, " (duplicate)") : null),
      h("td", {}, c.order_id ? h("code", {}, c.order_id) : "–"),
      h("td", { class: "num" }, c.amount !== undefined ? money(c.amount) : "–"),
      h("td", {}, h("span", { class: `pill ${c.outcome === "refused" ? "bad" : c.outcome === "ignored" ? "" : "ok"}` }, c.outcome || "–"),
        c.verified && c.reason ? h("span", { class: "small muted" }, ` ${c.reason}`) : null)))
      : h("tr", {}, h("td", { colspan: "6", class: "muted" }, "No payment callbacks yet.")));
    fill($("#prefunds"), refunds.refunds.length ? refunds.refunds.map((r) => h("tr", {},
      h("td", {}, r.ts ? timeOf(r.ts) : "–"), h("td", {}, h("code", {}, r.order_id)), h("td", { class: "num" }, money(r.amount)),
      h("td", {}, r.reason || ""), h("td", {}, r.status || "")))
      : h("tr", {}, h("td", { colspan: "5", class: "muted" }, "No provider refunds.")));
  } catch (e) {
    fill($("#callbacks"), h("tr", {}, h("td", { colspan: "6", class: "muted" }, `payments: ${e.code} ${e.message}`)));
  }
}

for (const b of document.querySelectorAll("#range button")) b.setAttribute("aria-pressed", String(Number(b.dataset.range) === rangeS));
poll();
pollGrowth();
loadFulfilment();
loadPayments();
setInterval(loadFulfilment, 5000);
setInterval(loadPayments, 5000);
loadAudit();
setInterval(loadAudit, 5000);
