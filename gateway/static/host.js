// Host console: /static/host.html?room=ROOM&token=HOST_JWT
//
// Runs a show with a mouse: create the room, go live, end; create a product, put it on the
// room's product list (小黄车: kept by the server, add / remove / reorder / mark the item
// being explained now, 讲解中) and pin it;
// create a flash-sale campaign (POST /api/v1/campaigns) and start it (`sale.start` over the
// WebSocket); drop coupons (`coupon.drop`); start a lottery (`lottery.start`); announce
// (POST /api/v1/rooms/{room}/announce); and watch live stats (online, comments/s, likes,
// orders, stock, GMV); moderate: each comment in the feed has Delete / Mute / Kick / Ban, the
// Moderation panel sets slow mode and the chat mode, appoints moderators and works the
// reports queue (GET /api/v1/rooms/{room}/reports, refreshed on `report.filed`); the
// Schedule panel publishes, lists and cancels the host's schedules (预告:
// /api/v1/hosts/{host}/schedule). When the show ends the end card shows the show report
// (GET /api/v1/rooms/{room}/report: duration, online, viewers, followers, gifts, orders, GMV,
// refund rate, conversion, top products and gifters); the Earnings panel shows the host's
// statement (GET /api/v1/hosts/{host}/earnings) and downloads it as CSV. User text is
// rendered through text nodes only.

import { sparkline } from "./charts.js";
import { $, api, ApiError, countdown, fill, fmtInt, h, Live, money, newId, params, timeOf, toast } from "./common.js";

const room = params.get("room") || "demo";
const token = params.get("token") || "";
// the shipping console: this room's paid orders, a parcel per form
$("#to-ship").href = `shipping.html?room=${encodeURIComponent(room)}&token=${encodeURIComponent(token)}`;

const S = {
  me: null,
  show: null,
  pin: null,
  mine: [], // the host's products (GET /api/v1/products)
  bag: { items: [], explaining: null, v: -1 }, // the room's list as the server has it (the highest v seen)
  campaigns: [],
  lotteries: new Map(),
  packets: new Map(), // red packet id -> packet (+ the end's summary)
  commentTimes: [],
  cpsHistory: [],
  gifts: 0,
  report: null, // the last show's report (the end card)
};

document.getElementById("room-name").textContent = room;
const live = new Live(room, token, { onEvent, onStatus, history: true });

function setText(id, v) {
  const el = document.getElementById(id);
  if (el) el.textContent = v;
}

function fail(what) {
  return (e) => toast(`${what}: ${e.code || ""} ${e.message || e}`, "error", 6000);
}

// ------------------------------------------------------------------ connection, feed
function onStatus(status, env) {
  if (status === "live") {
    S.me = env.d.user;
    setText("me", `${env.d.role}: ${S.me}`);
    if (env.d.show) S.show = env.d.show;
    if (env.d.pin !== undefined) setPin(env.d.pin);
    if (env.d.bag) setBag(env.d.bag);
    loadMine();
    if (typeof env.d.likes === "number") setText("st-likes", fmtInt(env.d.likes));
    for (const l of env.d.lotteries || []) S.lotteries.set(l.id, { ...l, state: "open" });
    for (const p of env.d.redpackets || []) S.packets.set(p.id, { ...p, state: "open" });
    renderPackets();
    loadBalance();
    renderLotteries();
    loadRoom();
    loadModeration();
    loadReports();
    loadSchedules();
    loadEarnings();
    return;
  }
  const pill = $("#room-state");
  pill.className = "pill warn";
  pill.textContent = status === "unauthorized" ? "bad or expired token" : `${status}…`;
}

function feed(text) {
  const ul = $("#feed");
  ul.prepend(h("li", {}, `${timeOf(Date.now())}  ${text}`));
  while (ul.childElementCount > 80) ul.lastElementChild.remove();
}

function onEvent(env, { replay }) {
  const d = env.d || {};
  switch (env.t) {
    case "comment":
      if (!replay) {
        S.commentTimes.push(Date.now());
        feedComment(d, env.seq);
      }
      return;
    case "comment.deleted":
      for (const li of document.querySelectorAll(`#feed li[data-seq="${Number(d.seq)}"]`)) {
        li.classList.add("deleted");
        li.querySelector(".mod-menu")?.remove();
        li.append(h("span", { class: "small muted" }, ` (deleted by ${d.by_role})`));
      }
      return;
    case "moderation":
      if (!replay) feed(`🛡 ${d.action}${d.user ? ` ${d.user}` : ""}${d.action === "chat" ? ` slow ${d.slow_mode_s} s, ${d.mode}` : ""} (by ${d.by_role})`);
      return loadModeration();
    case "report.filed":
      feed(`⚑ report on ${d.target}: ${d.reason}`);
      return loadReports();
    case "online": return setText("st-online", fmtInt(d.count));
    case "likes": return setText("st-likes", fmtInt(d.total));
    case "gift":
      if (!replay) {
        S.gifts += d.value || 0;
        setText("st-gifts", fmtInt(S.gifts));
        feed(`🎁 ${d.name || d.user} sent ${d.gift_name || d.gift_id} ×${d.count} (combo ${d.total})`);
      }
      return;
    case "notice": return replay ? null : feed(`📢 ${d.text}`);
    case "room.live":
      S.show = { ...(S.show || {}), state: "live" };
      if (!replay) {
        S.report = null; // a new show: the last one's end card goes
        renderReport();
      }
      renderShow();
      return replay ? null : feed("● the show is live");
    case "room.ended":
      S.show = { ...(S.show || {}), state: "ended" };
      renderShow();
      setText("summary", `Last show: ${duration(d.duration_s)} · peak ${fmtInt(d.peak_online ?? 0)} online · ${fmtInt(d.comments ?? 0)} comments · ${fmtInt(d.likes ?? 0)} likes`);
      if (replay) return null;
      loadReport();
      setTimeout(loadEarnings, 5000); // the show's gifts, once the earnings worker has them
      setTimeout(loadReport, 5000); // orders paid and gifts applied just after the end join it
      return feed("■ the show ended");
    case "product.pinned": return setPin(d);
    case "product.unpinned": return setPin(null);
    case "bag.changed":
      if (!replay && d.by && d.by !== S.me) feed(`🛍 the product list changed (by ${d.by})`);
      return setBag(d);
    case "sale.started":
    case "sale.ended":
    case "sale.soldout":
      if (!replay) feed(`⚡ ${env.t} ${d.sale_id}`);
      return loadCampaigns();
    case "sale.stock": {
      const c = S.campaigns.find((x) => x.id === d.sale_id);
      if (c) {
        c.remaining = d.remaining;
        renderCampaigns();
      }
      return;
    }
    case "coupon.dropped":
      if (!replay) feed(`🎟️ coupon drop ${d.drop_id}: ${d.quantity}`);
      return loadDrops();
    case "redpacket.dropped":
      S.packets.set(d.id, { ...(S.packets.get(d.id) || {}), ...d, state: "open" });
      if (!replay) feed(`🧧 red packet ${d.id}: ${fmtInt(d.amount)} coins in ${d.count} shares by ${d.by}`);
      return renderPackets();
    case "redpacket.ended":
      S.packets.set(d.id, { ...(S.packets.get(d.id) || {}), ...d, state: "ended" });
      if (!replay) feed(`🧧 red packet ${d.id} ended: ${d.grabbed}/${d.count} grabbed, ${fmtInt(d.refunded)} back to ${d.by}`);
      renderPackets();
      return loadBalance();
    case "lottery.started":
      S.lotteries.set(d.id, { ...d, state: "open" });
      if (!replay) feed(`🎁 lottery ${d.id} started`);
      return renderLotteries();
    case "lottery.ended":
      S.lotteries.set(d.id, { ...(S.lotteries.get(d.id) || {}), ...d, state: "ended" });
      if (!replay) feed(`🎁 lottery ${d.id} drawn: ${(d.winners || []).join(", ") || "no entrants"}`);
      return renderLotteries();
    case "error":
      if (!replay) toast(`${d.code}: ${d.message}`, "error");
      return;
    default:
      return;
  }
}

// ------------------------------------------------------------------ moderation
const roomPath = `/api/v1/rooms/${encodeURIComponent(room)}`;

function feedComment(d, seq) {
  const ul = $("#feed");
  const li = h("li", { dataset: { seq: String(seq || ""), user: d.user || "" } }, `${timeOf(Date.now())}  💬 ${d.name || d.user}: ${d.text}`);
  if (seq && d.user !== S.me) {
    li.append(h("span", { class: "mod-menu" },
      h("button", { class: "small", onclick: () => moderate("delete", d.user, seq) }, "Delete"),
      h("button", { class: "small", onclick: () => moderate("mute", d.user) }, "Mute 10 min"),
      h("button", { class: "small", onclick: () => moderate("kick", d.user) }, "Kick"),
      h("button", { class: "small", onclick: () => moderate("ban", d.user) }, "Ban")));
  }
  ul.prepend(li);
  while (ul.childElementCount > 80) ul.lastElementChild.remove();
}

async function moderate(action, user, seq) {
  try {
    if (action === "delete") await api(`${roomPath}/comments/${seq}`, { method: "DELETE" });
    else if (action === "mute") await api(`${roomPath}/mutes`, { method: "POST", body: { user, seconds: 600 } });
    else if (action === "kick") await api(`${roomPath}/kicks`, { method: "POST", body: { user } });
    else if (action === "ban") await api(`${roomPath}/bans`, { method: "POST", body: { user } });
    toast(`${action} ${user}: done`, "ok");
  } catch (e) {
    fail(action)(e);
  }
}

async function loadModeration() {
  try {
    const m = await api(`${roomPath}/moderation`);
    $("#m-slow").value = String(m.slow_mode_s);
    if (!$("#m-slow").value) $("#m-slow").append(h("option", { value: String(m.slow_mode_s), selected: true }, `${m.slow_mode_s} s`));
    $("#m-mode").value = m.chat;
    fill($("#m-mods"), m.moderators.length ? m.moderators.map((u, i) => [i ? ", " : "", u, " ",
      h("button", { class: "small", onclick: () => unappoint(u) }, "remove")]) : "none");
    const out = [...m.mutes.map((x) => `${x.user} (muted)`), ...m.kicks.map((x) => `${x.user} (kicked)`), ...m.bans.map((x) => `${x.user} (banned)`)];
    setText("m-out", out.length ? out.join(", ") : "nobody");
  } catch (e) {
    if (e.status !== 403 && e.status !== 404) console.warn(e);
  }
}

async function unappoint(user) {
  try {
    await api(`${roomPath}/moderators/${encodeURIComponent(user)}`, { method: "DELETE" });
  } catch (e) {
    fail("remove moderator")(e);
  }
  loadModeration();
}

$("#m-apply").addEventListener("click", async () => {
  try {
    const r = await api(`${roomPath}/chat`, { method: "PUT", body: { slow_mode_s: Number($("#m-slow").value), mode: $("#m-mode").value } });
    toast(`Chat: ${r.mode}, slow mode ${r.slow_mode_s ? `${r.slow_mode_s} s` : "off"}`, "ok");
  } catch (e) {
    fail("chat settings")(e);
  }
});

$("#m-appoint").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const user = $("#m-user").value.trim();
  if (!user) return;
  try {
    await api(`${roomPath}/moderators/${encodeURIComponent(user)}`, { method: "PUT" });
    $("#m-user").value = "";
    toast(`${user} moderates ${room}`, "ok");
  } catch (e) {
    fail("appoint")(e);
  }
  loadModeration();
});

let loadingReports = false;
async function loadReports() {
  if (loadingReports) return;
  loadingReports = true;
  try {
    const r = await api(`${roomPath}/reports?status=open&limit=20`);
    fill($("#reports"), r.reports.length ? r.reports.map((rep) => {
      const said = (rep.context || []).find((c) => c.reported);
      return h("li", { class: "stack report", dataset: { report: rep.id } },
        h("div", {}, h("b", {}, rep.reason), ` · ${rep.target} · reported by ${rep.reporter}`),
        said ? h("div", { class: "small" }, `“${said.text}”`) : null,
        h("div", { class: "row" },
          h("button", { class: "small", onclick: () => resolve(rep.id, "dismiss") }, "Dismiss"),
          rep.seq ? h("button", { class: "small", onclick: () => resolve(rep.id, "delete") }, "Delete comment") : null,
          h("button", { class: "small", onclick: () => resolve(rep.id, "mute") }, "Mute"),
          h("button", { class: "small", onclick: () => resolve(rep.id, "ban") }, "Ban")));
    }) : h("li", { class: "muted" }, "No open reports."));
  } catch (e) {
    if (e.status !== 403 && e.status !== 404) console.warn(e);
  } finally {
    loadingReports = false;
  }
}

async function resolve(id, action) {
  try {
    const r = await api(`/api/v1/reports/${encodeURIComponent(id)}/resolve`, { method: "POST", body: { action } });
    toast(`Report closed (${action}; ${r.closed.length} report(s))`, "ok");
  } catch (e) {
    fail("resolve")(e);
  }
  loadReports();
}

// ------------------------------------------------------------------ show life-cycle
async function loadRoom() {
  try {
    S.show = await api(`/api/v1/rooms/${encodeURIComponent(room)}`);
    $("#create-row").hidden = true;
    if (S.show.state === "ended") loadReport(); // the last show's end card, after a reload
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      S.show = null;
      $("#create-row").hidden = false;
    } else fail("room")(e);
  }
  renderShow();
}

// ------------------------------------------------------------------ the end card (show report)
function duration(seconds) {
  const s = Math.max(0, Math.round(Number(seconds) || 0));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  return m % 60 ? `${Math.floor(m / 60)} h ${m % 60} min` : `${m / 60} h`;
}

function pct(x) {
  return `${(100 * (Number(x) || 0)).toFixed(1)}%`;
}

async function loadReport() {
  let r;
  try {
    r = await api(`/api/v1/rooms/${encodeURIComponent(room)}/report`);
  } catch (e) {
    if (e instanceof ApiError && (e.status === 409 || e.status === 404)) return; // no show yet
    return fail("show report")(e);
  }
  S.report = r;
  renderReport();
}

function renderReport() {
  const r = S.report;
  const card = $("#end-card");
  if (!r || !r.ended) {
    card.hidden = true;
    return;
  }
  card.hidden = false;
  const stat = (v, label) => h("div", {}, h("b", {}, v), h("span", {}, label));
  fill($("#ec-stats"),
    stat(r.duration_text || duration(r.duration_s), "duration"),
    stat(fmtInt(r.peak_online), "peak online"),
    stat(String(r.avg_online ?? 0), "average online"),
    stat(fmtInt(r.viewers), "viewers"),
    stat(fmtInt(r.new_followers), "new followers"),
    stat(fmtInt(r.comments), "comments"),
    stat(fmtInt(r.likes), "likes"),
    stat(`${fmtInt(r.gifts?.value ?? 0)} 🪙`, `gifts (${fmtInt(r.gifts?.count ?? 0)})`),
    stat(fmtInt(r.orders), "orders paid"),
    stat(r.gmv_text || String(r.gmv), "GMV"),
    stat(pct(r.refund_rate), "refund rate"),
    stat(pct(r.conversion), `viewers → buyers (${fmtInt(r.buyers)})`));
  const products = r.top_products || [];
  fill($("#ec-products"), products.length
    ? products.map((p) => h("li", {}, `${p.name || p.product_id} · ${fmtInt(p.units)} sold · ${p.gmv_text || p.gmv}`))
    : h("li", { class: "muted" }, "No paid orders."));
  const gifters = r.gifts?.top_gifters || [];
  fill($("#ec-gifters"), gifters.length
    ? gifters.map((g, i) => h("li", {}, `${i + 1}. ${g.user} · ${fmtInt(g.value)} 🪙`))
    : h("li", { class: "muted" }, "No gifts."));
  setText("ec-asof", `as of ${timeOf(r.as_of_ms)}`);
}

$("#ec-refresh").addEventListener("click", loadReport);

// ------------------------------------------------------------------ earnings (the host's statement)
function earningsPath(format) {
  const to = Date.now();
  const from = to - Number($("#e-days").value) * 86400000;
  return `/api/v1/hosts/${encodeURIComponent(S.me)}/earnings?from=${from}&to=${to}${format ? `&format=${format}` : ""}`;
}

async function loadEarnings() {
  if (!S.me) return;
  let st;
  try {
    st = await api(earningsPath());
  } catch (e) {
    if (e instanceof ApiError && e.status === 403) return; // not this user's statement
    return fail("earnings")(e);
  }
  const stat = (v, label) => h("div", {}, h("b", {}, v), h("span", {}, label));
  fill($("#e-stats"),
    stat(fmtInt(st.opening), "opening"),
    stat(`+${fmtInt(st.accruals)}`, `gifts (${fmtInt(st.accrual_count)})`),
    stat(fmtInt(st.reversals), `reversed (${fmtInt(st.reversal_count)})`),
    stat(fmtInt(st.closing), "closing 🪙"));
}

$("#e-days").addEventListener("change", loadEarnings);
$("#e-csv").addEventListener("click", async () => {
  try {
    const data = await api(earningsPath("csv"));
    const url = URL.createObjectURL(new Blob([data.raw || ""], { type: "text/csv" }));
    const a = h("a", { href: url, download: `earnings-${S.me}-${$("#e-days").value}d.csv` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (e) {
    fail("earnings CSV")(e);
  }
});

function renderShow() {
  const state = S.show ? S.show.state : "not created";
  const pill = $("#room-state");
  pill.textContent = state === "live" ? "LIVE" : state;
  pill.className = `pill ${state === "live" ? "live" : ""}`;
  setText("show-title", S.show && S.show.title ? S.show.title : "–");
  $("#go-live").disabled = !S.show || state === "live";
  $("#end-show").disabled = state !== "live";
}

$("#create-room").addEventListener("click", async () => {
  try {
    await api("/api/v1/rooms", { method: "POST", body: { id: room, title: $("#new-title").value || `${room} live` } });
    toast("Room created", "ok");
  } catch (e) {
    if (e.status !== 409) return fail("create room")(e);
  }
  loadRoom();
});

$("#go-live").addEventListener("click", async () => {
  try {
    S.show = await api(`/api/v1/rooms/${encodeURIComponent(room)}/live`, { method: "POST" });
    renderShow();
  } catch (e) {
    fail("go live")(e);
  }
});

// ending a show cannot be undone: the first tap arms the button for 5 s, the second ends it
let endArmed = 0;
$("#end-show").addEventListener("click", async () => {
  const btn = $("#end-show");
  if (Date.now() > endArmed) {
    endArmed = Date.now() + 5000;
    btn.textContent = "Tap again to end the show";
    btn.classList.add("danger");
    setTimeout(() => {
      if (Date.now() > endArmed) {
        btn.textContent = "End show";
        btn.classList.remove("danger");
      }
    }, 5100);
    return;
  }
  endArmed = 0;
  btn.textContent = "End show";
  btn.classList.remove("danger");
  try {
    S.show = await api(`/api/v1/rooms/${encodeURIComponent(room)}/end`, { method: "POST" });
    renderShow();
  } catch (e) {
    fail("end")(e);
  }
});

// ------------------------------------------------------------------ products, the room's list (小黄车), pin
// The list lives on the server (GET/PUT /api/v1/rooms/{room}/bag...): a reload or a second
// tab shows the same list; every change comes back to each tab as `bag.changed` (the list
// with the highest `v` wins). The products to pick from are the host's own
// (GET /api/v1/products), plus what the list and the pin show.
function dollarsToCents(v) {
  return Math.round(Number(v) * 100);
}

const bagPath = `/api/v1/rooms/${encodeURIComponent(room)}/bag`;

// every product this console knows: mine, the list's, the pin's (the sale and prize pickers)
function knownProducts() {
  const out = new Map();
  for (const p of S.mine) out.set(p.id, { id: p.id, name: p.name, price: p.price_min ?? p.price });
  for (const i of S.bag.items) out.set(i.product_id, { id: i.product_id, name: i.name, price: i.price_min });
  if (S.pin && !out.has(S.pin.product_id)) out.set(S.pin.product_id, { id: S.pin.product_id, name: S.pin.name, price: S.pin.price });
  return [...out.values()];
}

function setBag(bag) {
  if (!bag || typeof bag.v !== "number" || bag.v < S.bag.v) return; // an older copy: keep what we have
  S.bag = { items: bag.items || [], explaining: bag.explaining ?? null, v: bag.v };
  renderProducts();
}

async function loadMine() {
  try {
    const r = await api("/api/v1/products?state=active&limit=100");
    S.mine = r.products || [];
  } catch {
    S.mine = []; // ops without products, or the catalogue not served: the list still works
  }
  renderProducts();
}

async function loadBag() {
  try {
    setBag(await api(bagPath));
  } catch (e) {
    fail("product list")(e);
  }
}

// one change of the list over HTTP (the answer is the list after it)
async function bagWrite(path, method, body, what) {
  try {
    setBag(await api(path, { method, body, headers: { "Idempotency-Key": newId("bag-") } }));
    return true;
  } catch (e) {
    if (e.code === "bag_changed") loadBag(); // another tab changed it meanwhile: show it as it is
    fail(what)(e);
    return false;
  }
}

function moveItem(pid, delta) {
  const ids = S.bag.items.map((i) => i.product_id);
  const at = ids.indexOf(pid);
  const to = at + delta;
  if (at < 0 || to < 0 || to >= ids.length) return;
  [ids[at], ids[to]] = [ids[to], ids[at]];
  bagWrite(`${bagPath}/order`, "PUT", { product_ids: ids }, "reorder");
}

function priceRange(lo, hi) {
  return hi && hi !== lo ? `${money(lo)}–${money(hi)}` : money(lo);
}

function setPin(pin) {
  S.pin = pin;
  setText("pinned", pin ? `${pin.name} (${money(pin.price)})` : "nothing");
  renderProducts();
}

function renderProducts() {
  const items = S.bag.items;
  const n = items.length;
  fill($("#bag"), n ? items.map((it, i) => {
    const explaining = S.bag.explaining === it.product_id;
    const pinned = S.pin && S.pin.product_id === it.product_id;
    return h("li", { class: `row bag-item ${explaining ? "explaining" : ""}`, dataset: { product: it.product_id } },
      h("span", { class: "bag-n" }, String(i + 1)),
      h("span", { class: "grow" }, h("b", {}, it.name), explaining ? h("span", { class: "pill live explain-tag" }, "讲解中") : null,
        h("div", { class: "small muted" }, `${priceRange(it.price_min, it.price_max)} · ${it.skus} SKU${it.skus === 1 ? "" : "s"} · `,
          h("code", {}, it.product_id))),
      h("span", { class: "bag-actions" },
        h("button", { type: "button", class: "small up", "aria-label": `move ${it.name} up`, disabled: i === 0, onclick: () => moveItem(it.product_id, -1) }, "↑"),
        h("button", { type: "button", class: "small down", "aria-label": `move ${it.name} down`, disabled: i === n - 1, onclick: () => moveItem(it.product_id, 1) }, "↓"),
        h("button", { type: "button", class: "small explain",
          onclick: () => bagWrite(`${bagPath}/explaining`, "PUT", { product_id: explaining ? null : it.product_id }, "explaining") },
        explaining ? "Stop explaining" : "Explain"),
        h("button", { type: "button", class: "small pin", disabled: pinned, onclick: () => pin(it.product_id) }, pinned ? "Pinned" : "Pin"),
        h("button", { type: "button", class: "small remove", onclick: () => bagWrite(`${bagPath}/items/${encodeURIComponent(it.product_id)}`, "DELETE", undefined, "remove") }, "Remove")));
  }) : h("li", { class: "muted" }, "The list is empty: add products viewers can buy at list price."));
  // the picker offers my products not on the list yet
  const listed = new Set(items.map((i) => i.product_id));
  const pick = $("#bag-pick");
  const prevPick = pick.value;
  const offer = S.mine.filter((p) => !listed.has(p.id) && p.state !== "archived");
  fill(pick, offer.length ? offer.map((p) => h("option", { value: p.id }, `${p.name} (${priceRange(p.price_min, p.price_max)})`))
    : h("option", { value: "" }, "all your products are on the list"));
  if (offer.some((p) => p.id === prevPick)) pick.value = prevPick;
  $("#bag-add").disabled = !offer.length;

  const products = knownProducts();
  const sel = $("#s-product");
  const prev = sel.value;
  fill(sel, products.map((p) => h("option", { value: p.id }, `${p.name} (${money(p.price)})`)));
  if (prev && products.find((p) => p.id === prev)) sel.value = prev;
  else if (S.pin) sel.value = S.pin.product_id;
  const prize = $("#l-prize-id");
  if (!prize.value && S.pin && $("#l-prize-kind").value === "product") prize.value = S.pin.product_id;
  fillPrizeOptions();
}

async function pin(productId) {
  try {
    await live.request("pin", { product_id: productId });
  } catch (e) {
    fail("pin")(e);
  }
}

$("#bag-add-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const pid = $("#bag-pick").value;
  if (pid) bagWrite(`${bagPath}/items`, "POST", { product_id: pid }, "add to list");
});

$("#product-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const p = await api("/api/v1/products", {
      method: "POST",
      body: { name: $("#p-name").value, price: dollarsToCents($("#p-price").value), stock: Number($("#p-stock").value) },
      headers: { "Idempotency-Key": newId("product-") },
    });
    S.mine = [p, ...S.mine.filter((x) => x.id !== p.id)];
    await bagWrite(`${bagPath}/items`, "POST", { product_id: p.id }, "add to list");
    await pin(p.id);
    toast(`Listed and pinned ${p.name}`, "ok");
  } catch (e) {
    fail("product")(e);
  }
});

// ------------------------------------------------------------------ flash sales
$("#sale-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const pid = $("#s-product").value;
  const product = knownProducts().find((p) => p.id === pid);
  if (!pid) return toast("Create a product first", "error");
  const starts = Date.now() + 5 * 60 * 1000;
  const body = {
    room,
    product_id: pid,
    product_name: product ? product.name : undefined,
    price: dollarsToCents($("#s-price").value),
    stock: Number($("#s-stock").value),
    per_user_limit: Number($("#s-limit").value),
    starts_ms: starts,
    ends_ms: starts + Number($("#s-duration").value) * 60 * 1000,
    payment_window_s: Number($("#s-window").value),
  };
  try {
    const r = await api("/api/v1/campaigns", { method: "POST", body });
    toast(`Campaign ${r.campaigns[0].sale_id} created`, "ok");
    loadCampaigns();
  } catch (e) {
    fail("campaign")(e);
  }
});

let loadingCampaigns = false;
async function loadCampaigns() {
  if (loadingCampaigns) return;
  loadingCampaigns = true;
  try {
    const r = await api(`/api/v1/campaigns?room=${encodeURIComponent(room)}&limit=20`);
    S.campaigns = r.campaigns;
    const recent = S.campaigns.filter((c) => c.state !== "scheduled").slice(0, 8);
    const stats = await Promise.allSettled(recent.map((c) => api(`/api/v1/sales/${encodeURIComponent(c.id)}/stats`)));
    let gmv = 0;
    for (const s of stats) if (s.status === "fulfilled") gmv += s.value.gmv || 0;
    setText("st-gmv", money(gmv));
  } catch (e) {
    if (e.status !== 403) console.warn(e);
  } finally {
    loadingCampaigns = false;
  }
  renderCampaigns();
}

function renderCampaigns() {
  let reserved = 0, paid = 0, left = null;
  for (const c of S.campaigns) {
    reserved += c.reserved || 0;
    paid += c.paid || 0;
    if (c.state === "live" || c.state === "sold_out") left = (left || 0) + (c.remaining || 0);
  }
  setText("st-reserved", fmtInt(reserved));
  setText("st-paid", fmtInt(paid));
  setText("st-stock", left === null ? "–" : fmtInt(left));
  fill($("#campaigns"), S.campaigns.map((c) => h("tr", { dataset: { sale: c.id } },
    h("td", {}, h("code", {}, c.id), h("div", { class: "small muted" }, `${c.product_name || c.product_id} · ${money(c.price)}`)),
    h("td", {}, h("span", { class: `pill ${c.state === "live" ? "live" : c.state === "sold_out" ? "bad" : ""}` }, c.state)),
    h("td", { class: "num" }, `${fmtInt(c.remaining)}/${fmtInt(c.stock)}`),
    h("td", { class: "num" }, fmtInt(c.reserved)),
    h("td", { class: "num" }, fmtInt(c.paid)),
    h("td", {},
      c.state === "scheduled" ? h("button", { class: "primary", onclick: () => startSale(c.id) }, "Start") : null,
      c.state === "live" || c.state === "sold_out" || c.state === "scheduled" ? h("button", { onclick: () => stopSale(c.id) }, "Stop") : null))));
}

async function startSale(id) {
  try {
    await live.request("sale.start", { sale_id: id });
    toast(`Sale ${id} is live`, "ok");
  } catch (e) {
    fail("start sale")(e);
  }
  loadCampaigns();
}

async function stopSale(id) {
  try {
    await api(`/api/v1/sales/${encodeURIComponent(id)}/stop`, { method: "POST" });
  } catch (e) {
    fail("stop sale")(e);
  }
  loadCampaigns();
}

// ------------------------------------------------------------------ coupons
$("#c-kind").addEventListener("change", () => {
  $("#c-value").value = $("#c-kind").value === "percent" ? "10" : "2";
});

$("#coupon-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const kind = $("#c-kind").value;
  const body = {
    kind,
    threshold: dollarsToCents($("#c-threshold").value || 0),
    value: kind === "percent" ? Math.round(Number($("#c-value").value)) : dollarsToCents($("#c-value").value),
    quantity: Number($("#c-qty").value),
    expires_in_s: Number($("#c-ttl").value),
  };
  try {
    const r = await live.request("coupon.drop", body);
    toast(`Dropped ${r.d.quantity} coupons (${r.d.drop_id})`, "ok");
    loadDrops();
  } catch (e) {
    fail("coupon drop")(e);
  }
});

async function loadDrops() {
  try {
    const r = await api(`/api/v1/rooms/${encodeURIComponent(room)}/coupons`);
    S.roomDrops = r.drops || [];
    fillPrizeOptions();
    fill($("#drops"), (r.drops || []).map((d) => h("li", {},
      h("code", {}, d.drop_id), ` · ${d.kind === "percent" ? `${d.value}% off` : `${money(d.value)} off`}`,
      d.threshold ? ` over ${money(d.threshold)}` : "",
      ` · ${fmtInt(d.remaining)} of ${fmtInt(d.quantity)} left · ${fmtInt(d.used || 0)} used · expires in ${countdown(d.expires_ms)}`)));
  } catch {
    // coupons not served by this gateway
  }
}

// ------------------------------------------------------------------ red packets
async function loadBalance() {
  const me = S.me;
  if (!me) return;
  try {
    const w = await api(`/api/v1/wallets/${encodeURIComponent(me)}`);
    $("#rp-balance").textContent = fmtInt(w.balance);
  } catch {
    // no wallet read for this token
  }
}

function renderPackets() {
  const items = [...S.packets.values()].sort((a, b) => (b.created_ms || 0) - (a.created_ms || 0)).slice(0, 8);
  fill($("#redpackets"), items.map((p) => h("li", { dataset: { packet: p.id } },
    "🧧 ", h("code", {}, p.id), ` · ${fmtInt(p.amount)} coins / ${p.count} shares`,
    p.password ? ` · password “${p.password}”` : "", p.followers_only ? " · followers only" : "",
    p.state === "ended"
      ? [` · ended: ${p.grabbed}/${p.count} grabbed, ${fmtInt(p.refunded || 0)} refunded`,
         p.best ? ` · best luck ${p.best.user} (${fmtInt(p.best.amount)})` : "", " · ",
         h("a", { href: p.record_url, target: "_blank", rel: "noopener" }, "record")]
      : ` · expires in ${countdown(p.expires_ms)}`)));
}

$("#redpacket-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = {
    amount: Number($("#rp-amount").value),
    count: Number($("#rp-count").value),
    duration_s: Number($("#rp-duration").value),
    greeting: $("#rp-greeting").value,
    followers_only: $("#rp-followers").checked,
    request_id: `rp${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`,
  };
  if ($("#rp-password").value.trim()) body.password = $("#rp-password").value.trim();
  try {
    const r = await api(`/api/v1/rooms/${encodeURIComponent(room)}/redpackets`, { method: "POST", body });
    S.packets.set(r.id, { ...r, state: "open" });
    $("#rp-balance").textContent = fmtInt(r.balance);
    toast(`Red packet dropped: ${fmtInt(r.amount)} coins in ${r.count} shares`, "ok");
    renderPackets();
  } catch (e) {
    fail("red packet")(e);
  }
});

// ------------------------------------------------------------------ lottery
// the prize is picked, not typed: the room's products, its coupon drops, or coins (ops only)
function fillPrizeOptions() {
  const kind = $("#l-prize-kind").value;
  const input = $("#l-prize-id");
  input.placeholder = kind === "coupon" ? "pick a coupon drop" : kind === "coins" ? "coins per winner" : "pick a product";
  input.type = kind === "coins" ? "number" : "text";
  const options = kind === "product"
    ? knownProducts().map((p) => h("option", { value: p.id }, `${p.name} (${money(p.price)})`))
    : kind === "coupon"
      ? (S.roomDrops || []).map((d) => h("option", { value: d.drop_id },
        `${d.kind === "percent" ? `${d.value}% off` : `${money(d.value)} off`}${d.threshold ? ` over ${money(d.threshold)}` : ""}`))
      : [];
  fill($("#l-prize-options"), options);
}

$("#l-prize-kind").addEventListener("change", () => {
  $("#l-prize-id").value = "";
  fillPrizeOptions();
});

$("#lottery-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const rule = $("#l-rule").value;
  const body = {
    title: $("#l-title").value,
    prize: $("#l-prize-kind").value === "coins"
      ? { kind: "coins", amount: Number($("#l-prize-id").value) }
      : { kind: $("#l-prize-kind").value, id: $("#l-prize-id").value },
    winners: Number($("#l-winners").value),
    duration_s: Number($("#l-duration").value),
    rule,
  };
  if (rule === "keyword") body.keyword = $("#l-arg").value;
  if (rule === "gift") body.min_gift_value = Number($("#l-arg").value);
  try {
    const r = await live.request("lottery.start", body);
    toast(`Lottery ${r.d.id} started`, "ok");
  } catch (e) {
    fail("lottery")(e);
  }
});

function renderLotteries() {
  const lots = [...S.lotteries.values()].sort((a, b) => (b.started_ms || 0) - (a.started_ms || 0)).slice(0, 4);
  fill($("#lotteries"), lots.map((l) => h("div", { class: "small" },
    h("b", {}, l.title || l.id), ` · ${l.winners_k} winner(s) · `,
    l.state === "ended"
      ? [`winners: ${(l.winners || []).join(", ") || "none"} · `, h("a", { href: l.record_url || `/api/v1/lotteries/${l.id}`, target: "_blank", rel: "noopener" }, "record")]
      : h("span", { class: "cd", dataset: { deadline: String(l.deadline_ms) } }, countdown(l.deadline_ms)))));
}

// ------------------------------------------------------------------ announce
$("#announce-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("#a-text").value.trim();
  if (!text) return;
  try {
    await api(`/api/v1/rooms/${encodeURIComponent(room)}/announce`, { method: "POST", body: { text } });
    $("#a-text").value = "";
  } catch (e) {
    fail("announce")(e);
  }
});

// ------------------------------------------------------------------ clocks
setInterval(() => {
  const now = Date.now();
  S.commentTimes = S.commentTimes.filter((t) => t > now - 5000);
  const cps = S.commentTimes.length / 5;
  setText("st-cps", cps.toFixed(1));
  S.cpsHistory.push(cps);
  if (S.cpsHistory.length > 120) S.cpsHistory.shift();
  sparkline($("#cps-spark"), S.cpsHistory);
  for (const el of document.querySelectorAll(".cd")) el.textContent = countdown(Number(el.dataset.deadline));
}, 1000);
setInterval(loadCampaigns, 2000);
setInterval(loadDrops, 3000);
setInterval(loadReports, 5000);

renderProducts();
loadCampaigns();
loadDrops();
live.connect();

// ------------------------------------------------------------------ schedule (预告)
function defaultStart() {
  const d = new Date(Date.now() + 3600_000);
  d.setSeconds(0, 0);
  const local = new Date(d.getTime() - d.getTimezoneOffset() * 60_000);
  return local.toISOString().slice(0, 16);
}
$("#sc-start").value = defaultStart();

async function loadSchedules() {
  if (!S.me) return;
  try {
    const r = await api(`/api/v1/hosts/${encodeURIComponent(S.me)}/schedule`);
    renderSchedules(r.schedules || []);
  } catch (e) {
    fail("schedules")(e);
  }
}

function renderSchedules(list) {
  fill($("#schedules"), ...(list.length ? list.map((s) => h("li", { class: "row", "data-schedule": s.id },
    h("span", { class: "grow" }, h("b", {}, s.title), ` · ${new Date(s.start_ms).toLocaleString()}`,
      s.products.length ? ` · ${s.products.join(", ")}` : "", ` · ${fmtInt(s.subscribers || 0)} subscribed`),
    h("span", { class: `pill ${s.state === "scheduled" ? "ok" : ""}` }, s.state),
    s.state === "scheduled" ? h("button", { type: "button", onclick: () => cancelSchedule(s) }, "Cancel") : null,
  )) : [h("li", { class: "muted" }, "No schedule yet.")]));
}

async function cancelSchedule(s) {
  try {
    await api(`/api/v1/schedules/${encodeURIComponent(s.id)}`, { method: "DELETE" });
    toast(`“${s.title}” cancelled`, "ok");
    loadSchedules();
  } catch (e) {
    fail("cancel")(e);
  }
}

$("#schedule-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!S.me) return;
  const start = new Date($("#sc-start").value).getTime();
  if (!Number.isFinite(start)) {
    toast("Pick the start date and time", "error");
    return;
  }
  const products = $("#sc-products").value.split(",").map((x) => x.trim()).filter(Boolean);
  try {
    const s = await api(`/api/v1/hosts/${encodeURIComponent(S.me)}/schedule`, {
      method: "POST", body: { title: $("#sc-title").value.trim(), start_ms: start, products, room },
    });
    toast(`Scheduled “${s.title}”`, "ok");
    $("#sc-title").value = "";
    loadSchedules();
  } catch (e) {
    fail("schedule")(e);
  }
});
