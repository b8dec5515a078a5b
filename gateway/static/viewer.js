// Viewer page: /static/viewer.html?room=ROOM&token=JWT
//
// Joins the room over /ws?format=json and renders: flying bullet comments (danmaku lanes),
// gift banners with combos, the pinned product with a live stock bar and a Buy button
// during a flash sale, orders with Pay, coupon drops with Claim, lotteries with Enter and
// their verifiable result, likes, online count, and the viewer's own points and level.
// Moderation: a deleted comment (`comment.deleted`) leaves the chat and the stream; each
// comment of someone else has a ⚑ to report it; slow mode and followers-only chat are shown
// by the composer; a mute, slow mode or a kick/ban (close 4403) is said in words.
// Follower reach: a 🔔 with the unread count (the `notifications` frame after welcome, raised by
// each pushed `host.live` / `schedule.reminder`) opens the inbox (GET /api/v1/me/notifications,
// Mark all read); the Host panel follows / unfollows the room's host and lists their
// upcoming schedules with Remind me (预约).
// Shopping (phone first): the pinned product's card sits over the video with its Buy; the
// room's product list (小黄车), a product's SKU picker and the cart with checkout are bottom
// sheets (shop.js), and so is the gift panel (sheets.js).
// All user text goes through text nodes (h(), fill(), textContent), never innerHTML.

import { $, api, countdown, fill, fmtInt, h, Live, money, newId, params, toast } from "./common.js";
import { openSheet } from "./sheets.js";
import { payControl, payOrder, setPayments } from "./pay.js";
import { Shop } from "./shop.js";

const room = params.get("room") || "demo";
const token = params.get("token") || "";
// order tracking (parcels, receipt, addresses) lives on its own page, phone first
$("#my-orders").href = `orders.html?room=${encodeURIComponent(room)}&token=${encodeURIComponent(token)}`;

const GIFT_ICONS = {
  rose: "🌹", heart: "❤️", lollipop: "🍭", applause: "👏", cake: "🎂",
  fireworks: "🎆", "sports-car": "🏎️", rocket: "🚀", castle: "🏰",
};
const giftIcon = (id) => GIFT_ICONS[id] || "🎁";

const S = {
  names: new Map(), // user id -> the display name its comments and gifts carried (the board shows names)
  me: null,
  role: null,
  show: null,
  pin: null,
  sales: new Map(), // sale_id -> {sale_id, product_id, price, stock, remaining, ends_ms, state}
  orders: new Map(), // order_id -> {order, state, payKey, note}
  drops: new Map(), // drop_id -> drop + {claimed, note}
  myCoupons: new Map(), // coupon_id -> coupon view
  lotteries: new Map(), // id -> lottery + {state, entered, position, result}
  packets: new Map(), // red packet id -> packet + {state, mine: {amount, index} | null, note, summary}
  combo: null, // {gift_id, combo_id, until}
  likesPending: 0,
  likesTotal: 0,
  chat: { slow_mode_s: 0, chat: "all", muted_until_ms: null }, // the room's moderation as it applies to me
  unread: 0, // notifications not read yet (follower reach)
  seenNotices: new Set(), // ids of notices shown (pushed and listed: shown once)
  following: null, // do I follow this room's host (null: unknown)
};

const live = new Live(room, token, { onEvent, onStatus });
const shop = new Shop(room, {
  onOrder: (o) => addOrder(o),
  onPaid: (id, amount) => orderState(id, "paid", { amount }),
  saleOf: (pid) => [...S.sales.values()].find((s) => s.product_id === pid && s.state === "live") || null,
});

function setCoins(v) {
  setText("coins", fmtInt(v));
  setText("sheet-coins", fmtInt(v));
}

// on a phone the product card sits over the video (its lower edge), as live apps show it;
// on a wide screen it is the side panel's first card
const phone = window.matchMedia("(max-width: 700px)");
function placeProductCard() {
  const panel = $("#product-panel");
  if (phone.matches) {
    $("#stage").append(panel);
    panel.classList.add("over");
  } else {
    $("#orders-panel").before(panel);
    panel.classList.remove("over");
  }
}
phone.addEventListener("change", placeProductCard);
placeProductCard();

// ------------------------------------------------------------------ header
function setText(id, v) {
  const el = document.getElementById(id);
  if (el) el.textContent = v;
}

function onStatus(status, env) {
  const pill = $("#room-state");
  if (status === "live") {
    S.me = env.d.user;
    S.role = env.d.role;
    setText("me", `${S.role}: ${S.me}`);
    welcome(env.d);
    return;
  }
  pill.className = "pill warn";
  pill.textContent = status === "unauthorized" ? "bad or expired token" : status === "refused" ? (env && env.reason) || "refused" : `${status}…`;
  if (status === "unauthorized") toast("The token was refused (4401). Use the URL printed by `livecommerce dev`.", "error", 10000);
  if (status === "refused") toast(`You were ${(env && env.reason) || "removed"} from this room by its moderators.`, "error", 10000);
}

function renderShow() {
  const show = S.show;
  const pill = $("#room-state");
  const badge = $("#live-badge");
  const state = show ? show.state : "no show";
  setText("title", show && show.title ? show.title : `Room ${room}`);
  pill.textContent = state === "live" ? "LIVE" : state;
  pill.className = `pill ${state === "live" ? "live" : ""}`;
  badge.textContent = state === "live" ? "● LIVE" : state === "ended" ? "ENDED" : "OFFLINE";
  badge.className = `badge pill ${state === "live" ? "live" : ""}`;
  setText("host-line", show && show.host ? `host: ${show.host}` : "waiting for the host…");
}

async function welcome(d) {
  $("#topup").hidden = !d.test_coins; // test coins are a dev/demo feature (LC_TEST_COINS)
  setPayments(d.payments); // how Pay pays: through the provider, the dev /pay, or not at all
  S.show = d.show || S.show;
  renderShow();
  if (d.pin !== undefined) setPin(d.pin);
  if (d.bag) shop.setBag(d.bag);
  shop.loadCart();
  renderProduct();
  if (typeof d.likes === "number") setLikes(d.likes);
  if (Array.isArray(d.leaderboard)) renderBoard(d.leaderboard);
  for (const lot of d.lotteries || []) addLottery(lot);
  for (const c of d.coupons || []) addDrop(c);
  for (const p of d.redpackets || []) addPacket(p);
  renderPackets();
  S.chat = { slow_mode_s: 0, chat: "all", muted_until_ms: null, ...(d.moderation || {}) };
  renderChatRules();
  renderLotteries();
  renderDrops();
  if (d.notifications) setUnread(d.notifications.unread || 0);
  refreshMine();
  loadHost();
}

async function refreshMine() {
  if (!S.me) return;
  const [points, wallet, coupons, orders, entered] = await Promise.allSettled([
    api(`/api/v1/points/${encodeURIComponent(S.me)}`),
    api(`/api/v1/wallets/${encodeURIComponent(S.me)}`),
    api(`/api/v1/users/${encodeURIComponent(S.me)}/coupons`),
    api(`/api/v1/orders?room=${encodeURIComponent(room)}&limit=50`),
    api(`/api/v1/rooms/${encodeURIComponent(room)}/lotteries/mine`),
  ]);
  if (entered.status === "fulfilled") {
    // after a reload: the lotteries I am in show as entered, not as an offer to enter again
    for (const id of entered.value.entered || []) {
      const lot = S.lotteries.get(id);
      if (lot) lot.entered = true;
    }
    renderLotteries();
  }
  if (orders.status === "fulfilled") {
    // after a reload: this room's orders as SQL has them (the socket's events update them)
    for (const o of (orders.value.orders || []).slice().reverse()) {
      const had = S.orders.get(o.id);
      if (had && had.state !== "reserved") continue;
      S.orders.set(o.id, { ...(had || {}), ...o, order_id: o.id, paid_amount: o.state === "paid" ? o.amount : undefined,
        payKey: (had && had.payKey) || newId("pay-"), note: (had && had.note) || "" });
    }
  }
  if (points.status === "fulfilled") setPoints(points.value.viewer, points.value.level);
  if (wallet.status === "fulfilled") setCoins(wallet.value.balance);
  if (coupons.status === "fulfilled") {
    for (const c of coupons.value.coupons || []) {
      S.myCoupons.set(c.coupon_id, c);
      const drop = S.drops.get(c.drop_id);
      if (drop) drop.claimed = c;
    }
    renderDrops();
  }
  renderOrders();
}

function setPoints(balance, level) {
  setText("points", fmtInt(balance));
  setText("level", `Lv ${level ?? 0}`);
}

function setLikes(total) {
  S.likesTotal = Math.max(total, 0);
  setText("likes", fmtInt(S.likesTotal));
}

$("#topup").addEventListener("click", async () => {
  if (!S.me) return;
  try {
    const r = await api(`/api/v1/wallets/${encodeURIComponent(S.me)}/topup`, {
      method: "POST",
      body: { amount: 1000 },
      headers: { "Idempotency-Key": newId("topup-") },
    });
    setCoins(r.balance);
    toast("1000 test coins added", "ok");
  } catch (e) {
    toast(`top-up failed: ${e.message}`, "error");
  }
});

// ------------------------------------------------------------------ events
function onEvent(env, { replay }) {
  const d = env.d || {};
  switch (env.t) {
    case "comment": return onComment(d, replay, env.seq);
    case "comment.deleted": return removeComment(d.seq);
    case "moderation": return onModeration(d, replay);
    case "notice": return onNotice(d, replay);
    case "likes": return setLikes(d.total);
    case "online": return setText("online", fmtInt(d.count));
    case "gift": return replay ? null : onGift(d);
    case "leaderboard": return renderBoard(d.top || []);
    case "room.live":
      S.show = { ...(S.show || {}), state: "live", title: d.title, host: d.host };
      return renderShow();
    case "room.ended":
      S.show = { ...(S.show || {}), state: "ended" };
      // the end closed the show's sales (room.ended's `closed.sales`): none is live any more
      for (const s of S.sales.values()) if (s.state === "live" || s.state === "sold_out") s.state = "ended";
      renderProduct();
      renderShow();
      if (!replay) chatLine("📺", `Show ended · peak ${d.peak_online ?? "–"} online · ${d.comments ?? 0} comments · ${d.likes ?? 0} likes`, "host");
      return;
    case "product.pinned": return setPin(d);
    case "product.unpinned": return setPin(null);
    case "bag.changed":
      shop.setBag(d);
      return renderProduct(); // the card shows the item being explained when no flash sale runs
    case "sale.started":
      S.sales.set(d.sale_id, { ...d, state: "live" });
      return renderProduct();
    case "sale.stock": {
      const s = S.sales.get(d.sale_id);
      if (s) {
        s.remaining = d.remaining;
        if (s.state === "sold_out" && d.remaining > 0) s.state = "live";
      }
      return renderProduct();
    }
    case "sale.soldout": return saleState(d.sale_id, "sold_out");
    case "sale.ended": return saleState(d.sale_id, "ended");
    case "order.reserved": return addOrder(d);
    case "order.paid":
      shop.paid(d.order_id, d.amount);
      return orderState(d.order_id, "paid", d);
    case "order.cancelled":
      shop.cancelled(d.order_id, d.reason);
      return orderState(d.order_id, "cancelled", d);
    case "coupon.dropped":
      addDrop(d);
      return renderDrops();
    case "coupon.claimed": return onClaimed(d);
    case "redpacket.dropped":
      addPacket(d);
      if (!replay && d.by !== S.me) toast(`🧧 ${d.by} dropped a red packet: ${fmtInt(d.amount)} coins!`, "ok");
      return renderPackets();
    case "redpacket.grabbed": return onGrabbed(d);
    case "redpacket.ended": {
      const p = S.packets.get(d.id) || { id: d.id };
      S.packets.set(d.id, { ...p, ...d, state: "ended", summary: d });
      return renderPackets();
    }
    case "lottery.started":
      addLottery(d);
      return renderLotteries();
    case "lottery.entered": {
      const lot = S.lotteries.get(d.id);
      if (lot) Object.assign(lot, { entered: true, position: d.position });
      return renderLotteries();
    }
    case "lottery.ended": return onLotteryEnded(d, replay);
    case "lottery.won":
      if (!replay) toast(`🎉 You won the lucky bag “${d.title || d.id}”!`, "ok", 8000);
      return;
    case "prize.awarded":
      if (!replay) {
        toast(d.kind === "coins" ? `🪙 ${fmtInt(d.amount)} coins are in your wallet`
          : d.kind === "product" ? "🎁 Your prize is an order on its way to you: add a shipping address if you have none"
          : "🎟 Your prize coupon is in your wallet", "ok", 8000);
      }
      if (d.kind === "coins" && typeof d.balance === "number") setCoins(d.balance);
      return;
    case "points": return setPoints(d.balance, d.level);
    case "host.live":
    case "schedule.reminder": return onReachNotice(env.t, d);
    case "notifications": return setUnread(d.unread || 0); // right after welcome: the bell's count
    case "error":
      if (!replay) toast(`${d.code}: ${d.message}`, "error");
      return;
    default:
      return;
  }
}

// ------------------------------------------------------------------ comments (danmaku)
const LANE_H = 30;
const SPEED = 140; // px per second
const MAX_FLYING = 80;
const laneFreeAt = [];

function onComment(d, replay, seq) {
  if (d.name && d.user) S.names.set(d.user, d.name);
  chatLine(d.name || d.user, d.text, d.role === "host" ? "host" : "", d.level, seq, d.user);
  if (!replay) fly(d, seq);
}

function fly(d, seq) {
  const layer = $("#danmaku");
  if (layer.childElementCount >= MAX_FLYING) return; // a hot room: shed, the chat keeps it
  const el = h(
    "span",
    { class: `dm ${d.user === S.me ? "mine" : ""} ${d.role === "host" ? "host" : ""}` },
    d.level ? h("span", { class: "lv" }, `Lv${d.level}`) : null,
    d.text,
  );
  el.dataset.user = d.user || "";
  if (seq) el.dataset.seq = String(seq);
  layer.append(el);
  const width = layer.clientWidth;
  const lanes = Math.max(1, Math.floor(layer.clientHeight / LANE_H));
  const now = performance.now();
  let lane = 0;
  let best = Infinity;
  for (let i = 0; i < lanes; i++) {
    const free = laneFreeAt[i] || 0;
    if (free <= now) { lane = i; best = -1; break; }
    if (free < best) { best = free; lane = i; }
  }
  const w = el.offsetWidth;
  laneFreeAt[lane] = now + ((w + 40) / SPEED) * 1000;
  el.style.top = `${lane * LANE_H + 4}px`;
  const distance = width + w + 20;
  const anim = el.animate(
    [{ transform: "translateX(0)" }, { transform: `translateX(${-distance}px)` }],
    { duration: (distance / SPEED) * 1000, easing: "linear" },
  );
  anim.onfinish = () => el.remove();
}

function chatLine(who, text, cls = "", level = 0, seq = null, user = null) {
  const list = $("#chat");
  const li = h("li", { class: cls }, h("span", { class: "who" }, level ? `${who} · Lv${level}` : who), h("span", { class: "text" }, text));
  if (seq) {
    li.dataset.seq = String(seq);
    if (user && user !== S.me) li.append(h("button", { class: "report small", title: "Report this comment", onclick: () => reportForm(li, seq) }, "⚑"));
  }
  list.append(li);
  while (list.childElementCount > 120) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}

// ------------------------------------------------------------------ moderation
const REPORT_REASONS = ["spam", "abuse", "harassment", "hate", "sexual", "violence", "fraud", "illegal", "other"];

function removeComment(seq) {
  for (const el of document.querySelectorAll(`#chat li[data-seq="${Number(seq)}"], #danmaku .dm[data-seq="${Number(seq)}"]`)) el.remove();
}

function reportForm(li, seq) {
  if (li.querySelector(".report-form")) return;
  const sel = h("select", { class: "report-reason" }, REPORT_REASONS.map((r) => h("option", { value: r }, r)));
  const form = h("span", { class: "report-form" }, sel, h("button", {
    class: "small",
    onclick: async (ev) => {
      ev.target.disabled = true;
      try {
        await api(`/api/v1/rooms/${encodeURIComponent(room)}/reports`, { method: "POST", body: { seq, reason: sel.value } });
        fill(form, h("span", { class: "small muted" }, "reported ✓"));
      } catch (e) {
        ev.target.disabled = false;
        toast(`report: ${e.code}: ${e.message}`, "error");
      }
    },
  }, "Send report"));
  li.append(form);
}

function onModeration(d, replay) {
  if (d.action === "chat") {
    S.chat.slow_mode_s = d.slow_mode_s;
    S.chat.chat = d.mode;
  } else if (d.user === S.me && d.action === "mute") {
    S.chat.muted_until_ms = d.until_ms;
    if (!replay) toast(`You were muted by the room's ${d.by_role}.`, "error", 6000);
  } else if (d.user === S.me && d.action === "unmute") {
    S.chat.muted_until_ms = null;
  } else if (d.user === S.me && d.action === "moderator.add") {
    S.chat.role = "moderator";
  }
  renderChatRules();
}

function renderChatRules() {
  const c = S.chat;
  const parts = [];
  if (c.slow_mode_s) parts.push(`slow mode: one comment per ${c.slow_mode_s} s`);
  if (c.chat === "followers") parts.push("followers only");
  if (c.chat === "fanclub") parts.push("fan club only");
  if (c.muted_until_ms && c.muted_until_ms > Date.now()) parts.push(`you are muted until ${new Date(c.muted_until_ms).toLocaleTimeString()}`);
  setText("chat-rules", parts.join(" · "));
}

function refusalText(e) {
  switch (e.code) {
    case "rate_limited": return "Slow down: comment rate limit";
    case "slow_mode": return `Slow mode: wait ${Math.ceil(e.retry_after_s || 1)} s`;
    case "muted": return e.until_ms ? `You are muted until ${new Date(e.until_ms).toLocaleTimeString()}` : "You are muted";
    case "followers_only": return "Only followers of the host may comment now";
    case "fanclub_only": return "Only fan-club members may comment now";
    default: return `${e.code}: ${e.message}`;
  }
}

function onNotice(d, replay) {
  chatLine("📢", d.text, "host");
  if (replay) return;
  const stage = $("#stage");
  stage.querySelectorAll(".notice").forEach((n) => n.remove());
  const n = h("div", { class: "notice", role: "status" }, `📢 ${d.text}`);
  stage.append(n);
  setTimeout(() => n.remove(), 7000);
}

$("#composer").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("#comment-text");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  try {
    await live.request("comment", { text });
  } catch (e) {
    input.value = text;
    toast(refusalText(e), "error");
  }
});

// ------------------------------------------------------------------ likes
let likeTimer = null;
$("#like").addEventListener("click", () => {
  S.likesPending += 1;
  setLikes(S.likesTotal + 1); // optimistic; the room's `likes` total corrects it
  const heart = h("span", { class: "heart", style: { left: `${Math.random() * 30}px` } }, "♥");
  heart.style.color = ["#ff4f6d", "#ffb74d", "#4fc3f7", "#81c784"][Math.floor(Math.random() * 4)];
  $("#hearts").append(heart);
  setTimeout(() => heart.remove(), 1700);
  if (!likeTimer) {
    likeTimer = setTimeout(() => {
      const n = S.likesPending;
      S.likesPending = 0;
      likeTimer = null;
      if (n) live.send("like", { count: Math.min(n, 1000) });
    }, 250);
  }
});

// ------------------------------------------------------------------ gifts
async function loadCatalogue() {
  try {
    const { gifts } = await api("/api/v1/gifts");
    const bar = $("#gift-bar");
    fill(bar);
    for (const g of gifts.slice(0, 9)) {
      bar.append(
        h("button", { type: "button", title: `${g.name}: ${g.price} coins`, onclick: () => sendGift(g), dataset: { gift: g.id } },
          h("span", { class: "icon" }, giftIcon(g.id)),
          h("span", { class: "small" }, g.name),
          h("span", { class: "small muted" }, `${g.price} 🪙`)),
      );
    }
  } catch {
    $("#open-gifts").hidden = true; // gifts not served by this gateway: no gift panel
  }
}

// the gift panel is a bottom sheet: the video and the banners stay in view above it
$("#open-gifts").addEventListener("click", () => openSheet("gift-sheet", { dim: false }));

async function sendGift(g) {
  const now = Date.now();
  const combo = S.combo && S.combo.gift_id === g.id && S.combo.until > now ? S.combo.combo_id : undefined;
  try {
    const r = await live.request("gift", { gift_id: g.id, count: 1, ...(combo ? { combo_id: combo } : {}) });
    S.combo = { gift_id: g.id, combo_id: r.d.combo_id, until: Date.now() + 3000 };
    setCoins(r.d.balance);
  } catch (e) {
    toast(e.code === "insufficient_funds" ? `Not enough coins for ${g.name}: top up first` : `${e.code}: ${e.message}`, "error");
  }
}

const banners = new Map(); // combo_id -> {el, timer}
function onGift(d) {
  if (d.name && d.user) S.names.set(d.user, d.name);
  const lane = $("#gift-lane");
  let b = banners.get(d.combo_id);
  if (!b) {
    const el = h("div", { class: "gift-banner", dataset: { combo: d.combo_id } },
      h("span", { class: "icon" }, giftIcon(d.gift_id)),
      h("span", {}, h("b", {}, d.name || d.user), " sent ", d.gift_name || d.gift_id),
      h("span", { class: "combo" }, ""));
    lane.append(el);
    while (lane.childElementCount > 4) {
      const old = lane.firstElementChild;
      banners.delete(old.dataset.combo);
      old.remove();
    }
    b = { el, timer: null };
    banners.set(d.combo_id, b);
  }
  b.el.querySelector(".combo").textContent = `×${d.total}`;
  b.el.classList.remove("bump");
  void b.el.offsetWidth;
  b.el.classList.add("bump");
  clearTimeout(b.timer);
  b.timer = setTimeout(() => { b.el.remove(); banners.delete(d.combo_id); }, 4000);
  if ((d.tier || 1) >= 3) {
    const big = h("div", { class: "gift-big" }, giftIcon(d.gift_id), h("div", { class: "who" }, `${d.name || d.user} · ${d.gift_name || d.gift_id}`));
    $("#stage").append(big);
    setTimeout(() => big.remove(), 2500);
  }
}

function renderBoard(top) {
  const ol = $("#leaderboard");
  fill(ol, top.length ? top.map((r) => h("li", { title: r.id }, `#${r.rank} `, h("b", {}, S.names.get(r.id) || r.id), ` · ${fmtInt(r.score)} 🪙`)) : h("li", { class: "muted" }, "No gifts yet."));
}

// ------------------------------------------------------------------ product, sale, buy
function setPin(pin) {
  S.pin = pin;
  if (pin && pin.sale && pin.sale.sale_id && !S.sales.has(pin.sale.sale_id)) {
    S.sales.set(pin.sale.sale_id, { state: "live", ...pin.sale });
  }
  renderProduct();
}

function saleState(id, state) {
  const s = S.sales.get(id);
  if (s) {
    s.state = state;
    if (state === "sold_out") s.remaining = 0;
  }
  renderProduct();
}

function currentSale() {
  const sales = [...S.sales.values()];
  const pid = S.pin && S.pin.product_id;
  const rank = (s) => (s.state === "live" ? 3 : s.state === "sold_out" ? 2 : 1);
  const mine = sales.filter((s) => !pid || s.product_id === pid);
  const pool = mine.length ? mine : sales.filter((s) => s.state === "live");
  pool.sort((a, b) => rank(b) - rank(a) || (b.starts_ms || 0) - (a.starts_ms || 0));
  return pool[0] || null;
}

let buyMsg = "";
function renderProduct() {
  const box = $("#product");
  const pin = S.pin;
  const sale = currentSale();
  const explaining = shop.explainingItem();
  $("#product-panel").classList.toggle("empty", !pin && !sale && !explaining);
  setText("product-h", !pin && !sale && explaining ? "Now explaining" : sale && sale.state === "live" ? "Flash sale" : "Pinned product");
  if (!pin && !sale) {
    // no pin: the item the host is explaining now (讲解中), bought at list price in its sheet
    fill(box, explaining ? h("div", { class: "product-card" }, h("div", { class: "thumb" }, "🛍️"), h("div", { class: "grow" },
      h("div", {}, h("span", { class: "pill live explain-tag" }, "讲解中"), h("span", { class: "name", id: "product-name" }, explaining.name)),
      h("div", { class: "row card-buy" }, explaining.price_max !== explaining.price_min ? h("span", { class: "small muted" }, "from") : null,
        h("span", { class: "price-now" }, money(explaining.price_min)),
        h("span", { class: "grow" }),
        h("button", { class: "primary", id: "buy-list", onclick: () => shop.openProduct(explaining.product_id) }, "Buy"))))
      : h("span", { class: "muted" }, "Nothing pinned yet."));
    return;
  }
  const name = pin ? pin.name : `Product ${sale.product_id}`;
  const listPrice = pin ? pin.price : null;
  const parts = [];
  const now = pin && explaining && explaining.product_id === pin.product_id;
  parts.push(h("div", {}, now ? h("span", { class: "pill live explain-tag" }, "讲解中") : null, h("span", { class: "name", id: "product-name" }, name)));
  if (sale) {
    parts.push(h("div", {}, h("span", { class: "price-now" }, money(sale.price)), listPrice && listPrice !== sale.price ? h("span", { class: "price-was" }, money(listPrice)) : null));
    const stock = Math.max(1, sale.stock || 1);
    const rem = Math.max(0, sale.remaining ?? stock);
    parts.push(h("div", { class: "stockbar", title: "stock left" }, h("div", { style: { width: `${(100 * rem) / stock}%` } })));
    parts.push(h("div", { class: "small", id: "stock-text" }, sale.state === "sold_out" || rem === 0 ? "Sold out" : `${fmtInt(rem)} of ${fmtInt(sale.stock)} left`));
    const stateText = sale.state === "live"
      ? ["⚡ Flash sale live", sale.ends_ms ? [" · ends in ", cd(sale.ends_ms)] : "", ` · limit ${sale.per_user_limit ?? 1} per person`]
      : sale.state === "sold_out" ? "⚡ Flash sale sold out" : sale.state === "ended" ? "Flash sale ended" : `Flash sale ${sale.state}`;
    parts.push(h("div", { class: "small muted", id: "sale-state" }, stateText));
    // units I hold in this sale (reserved or paid): at the per-person limit Buy is off
    const mine = [...S.orders.values()].filter((o) => o.sale_id === sale.sale_id && o.state !== "cancelled")
      .reduce((n, o) => n + (o.qty || 0), 0);
    const atLimit = mine >= (sale.per_user_limit ?? 1);
    const canBuy = sale.state === "live" && rem > 0 && !atLimit;
    const label = canBuy ? "Buy now" : sale.state === "live" && atLimit && rem > 0 ? "Limit reached" : sale.state === "live" ? "Sold out" : "Buy";
    parts.push(h("div", { class: "row card-buy" },
      h("button", { class: "primary", id: "buy", disabled: !canBuy, onclick: () => buy(sale) }, label),
      h("span", { class: "small", id: "buy-msg" }, buyMsg)));
  } else {
    parts.push(h("div", { class: "row card-buy" }, h("span", { class: "price-now" }, money(listPrice)), h("span", { class: "grow" }),
      h("button", { class: "primary", id: "buy-list", onclick: () => shop.openProduct(pin.product_id) }, "Buy")));
    parts.push(h("div", { class: "small muted" }, "No flash sale on this product right now."));
  }
  fill(box, h("div", { class: "product-card" }, h("div", { class: "thumb" }, "🛍️"), h("div", { class: "grow" }, parts)));
}

const BUY_ERRORS = {
  sold_out: "Sold out — too late this time.",
  limit_reached: "You reached the per-person limit for this sale.",
  not_started: "The sale has not started yet.",
  ended: "The sale has ended.",
};

async function buy(sale) {
  const btn = $("#buy");
  btn.disabled = true;
  buyMsg = "Reserving…";
  setText("buy-msg", buyMsg);
  try {
    // a fresh request_id per click; the server answers a repeated one with the first order
    const r = await live.request("buy", { sale_id: sale.sale_id, qty: 1, request_id: newId("r") });
    addOrder(r.d);
    buyMsg = r.d.duplicate ? "Already reserved: see My orders." : "Reserved! Pay in My orders before the timer runs out.";
  } catch (e) {
    buyMsg = BUY_ERRORS[e.code] || `${e.code}: ${e.message}`;
  }
  renderProduct();
}

// ------------------------------------------------------------------ orders, pay
function addOrder(d) {
  if (!d || !d.order_id) return;
  const o = S.orders.get(d.order_id);
  if (o) return;
  S.orders.set(d.order_id, { ...d, state: "reserved", payKey: d.payKey || newId("pay-"), note: "" });
  renderOrders();
}

function orderState(id, state, d) {
  const o = S.orders.get(id);
  if (!o) {
    S.orders.set(id, { ...d, order_id: id, state, payKey: newId("pay-"), note: "" });
  } else if (o.state === "reserved") {
    o.state = state;
    o.paying = false;
    if (d && d.amount !== undefined) o.paid_amount = d.amount;
    if (state === "paid") {
      o.note = "";
      if (o.coupon && S.myCoupons.has(o.coupon)) S.myCoupons.get(o.coupon).state = "used";
      buyMsg = ""; // "Reserved!" is over once it is paid
      renderProduct();
    }
    if (state === "cancelled" && d && d.reason) o.note = d.reason === "timeout" ? "payment time-out: stock released" : `cancelled (${d.reason})`;
  }
  renderOrders();
}

// the coupons this order can use, best first (the largest discount on this amount)
function usableCoupons(o) {
  const off = (c) => (c.kind === "percent" ? Math.floor((o.amount * c.value) / 100) : Math.min(c.value, o.amount));
  return [...S.myCoupons.values()]
    .filter((c) => c.state === "claimed" && (!c.threshold || o.amount >= c.threshold))
    .sort((a, b) => off(b) - off(a));
}

function renderOrders() {
  const box = $("#orders");
  const orders = [...S.orders.values()].reverse();
  if (!orders.length) {
    fill(box, h("span", { class: "muted" }, "No orders yet."));
    return;
  }
  fill(box, orders.map((o) => {
    const status = o.state === "paid"
      ? h("span", { class: "pill ok" }, `Paid ✓ ${money(o.paid_amount ?? o.amount)}`)
      : o.state === "cancelled" ? h("span", { class: "pill bad" }, "Cancelled")
      : h("span", { class: "pill warn" }, "Reserved · pay within ", cd(o.pay_by_ms));
    const actions = [];
    const cartOrder = o.sale_id === "cart" || Array.isArray(o.lines);
    if (o.state === "reserved") {
      const coupons = cartOrder ? [] : usableCoupons(o); // a cart order's coupons were chosen at checkout
      if (coupons.length) {
        // the best coupon is proposed: a claimed coupon the viewer forgets to pick is money lost
        actions.push(h("select", { class: "coupon-select", "aria-label": "coupon" },
          coupons.map((c) => h("option", { value: c.coupon_id }, couponText(c))),
          h("option", { value: "" }, "no coupon")));
      }
      actions.push(payControl(o, (ev) => pay(o, ev.target)));
      actions.push(h("button", { class: "cancel", onclick: () => cancelOrder(o) }, "Cancel"));
    }
    return h("div", { class: "order", dataset: { order: o.order_id } },
      cartOrder ? h("div", {}, `🛒 ${fmtInt(o.qty)} item${o.qty === 1 ? "" : "s"} = `, h("b", {}, money(o.amount)))
        : h("div", {}, `${o.qty} × ${money(o.unit_price)} = `, h("b", {}, money(o.amount))),
      h("div", { class: "small muted" }, `order ${o.order_id}`),
      h("div", { class: "row" }, status, ...actions),
      o.note ? h("div", { class: "small" }, o.note) : null);
  }));
  renderProduct(); // the per-person limit follows my orders
}

async function pay(o, btn) {
  const sel = btn.parentElement.querySelector(".coupon-select");
  const coupon = sel && sel.value ? sel.value : undefined;
  if (coupon) o.coupon = coupon; // marked used when the order is paid
  await payOrder(o, { coupon, changed: renderOrders, paid: (amount, r) => {
    shop.paid(o.order_id, amount); // a cart order paid from My orders: its cart sheet agrees
    orderState(o.order_id, "paid", { amount });
    if (r && r.discount) o.note = `coupon saved ${money(r.discount)}`;
  } });
}

async function cancelOrder(o) {
  try {
    await api(`/api/v1/orders/${encodeURIComponent(o.order_id)}/cancel`, { method: "POST" });
    o.state = "cancelled";
    o.note = "cancelled by you";
  } catch (e) {
    o.note = `${e.code}: ${e.message}`;
  }
  renderOrders();
}

// ------------------------------------------------------------------ coupons
function couponText(c) {
  if (c.kind === "percent") return `${c.value}% off${c.threshold ? ` over ${money(c.threshold)}` : ""}`;
  return c.threshold ? `${money(c.value)} off ${money(c.threshold)}+` : `${money(c.value)} off`;
}

function addDrop(d) {
  const old = S.drops.get(d.drop_id) || {};
  S.drops.set(d.drop_id, { ...old, ...d, claimed: old.claimed || null, note: old.note || "" });
}

function onClaimed(d) {
  if (!d.drop_id) return;
  S.myCoupons.set(d.coupon_id, { ...d, state: d.state || "claimed" });
  const drop = S.drops.get(d.drop_id);
  if (drop) {
    drop.claimed = d;
    if (typeof d.remaining === "number") drop.remaining = d.remaining;
  } else {
    S.drops.set(d.drop_id, { ...d, claimed: d, note: d.via === "points" ? "redeemed with points" : "" });
  }
  renderDrops();
  renderOrders();
}

function renderDrops() {
  const box = $("#coupons");
  const now = Date.now();
  const drops = [...S.drops.values()].filter((d) => d.claimed || d.expires_ms > now);
  if (!drops.length) {
    fill(box, h("span", { class: "muted" }, "No coupon drops right now."));
    return;
  }
  fill(box, drops.map((d) => {
    const left = typeof d.remaining === "number" ? `${fmtInt(d.remaining)} of ${fmtInt(d.quantity)} left` : "";
    let action;
    if (d.claimed) action = h("span", { class: "pill ok claimed" }, "Claimed ✓");
    else if (d.remaining === 0) action = h("span", { class: "pill bad" }, "All claimed");
    else action = h("button", { class: "primary claim", onclick: (ev) => claim(d, ev.target) }, "Claim");
    return h("div", { class: "coupon", dataset: { drop: d.drop_id } },
      h("span", { class: "value" }, couponText(d)),
      h("span", { class: "grow small muted" }, left, d.expires_ms ? [" · expires in ", cd(d.expires_ms)] : ""),
      action,
      d.note ? h("div", { class: "small" }, d.note) : null);
  }));
}

async function claim(d, btn) {
  btn.disabled = true;
  try {
    const r = await live.request("coupon.claim", { drop_id: d.drop_id });
    onClaimed(r.d);
    toast(`Coupon claimed: ${couponText(r.d)}`, "ok");
  } catch (e) {
    if (e.code === "already_claimed") d.claimed = { drop_id: d.drop_id };
    else if (e.code === "sold_out") d.remaining = 0;
    d.note = e.message || e.code;
    renderDrops();
  }
}

// ------------------------------------------------------------------ lottery
function addLottery(l) {
  const old = S.lotteries.get(l.id) || {};
  S.lotteries.set(l.id, { state: "open", entered: false, ...old, ...l });
}

function onLotteryEnded(d, replay) {
  const old = S.lotteries.get(d.id) || {};
  S.lotteries.set(d.id, { ...old, ...d, state: "ended", result: d });
  renderLotteries(); // a winner also gets the private `lottery.won` (a toast)
}

function ruleText(l) {
  const r = l.rule || {};
  if (r.kind === "keyword") return `comment “${r.keyword}” to enter`;
  if (r.kind === "gift") return `send gifts worth ${fmtInt(r.min_gift_value)} coins to enter`;
  return "press Enter to join";
}

// what a lucky bag offers, in words: coins, a coupon's terms, or a product
function prizeText(p) {
  if (!p) return "";
  if (p.kind === "coins") return `${fmtInt(p.amount)} coins`;
  if (p.kind === "coupon" && p.coupon) {
    const c = p.coupon;
    const off = c.kind === "percent" ? `${c.value}% off` : `${money(c.value)} off`;
    return c.threshold ? `coupon: ${off} ${money(c.threshold)}+` : `coupon: ${off}`;
  }
  return `${p.kind} ${p.id}`;
}

function renderLotteries() {
  const box = $("#lottery");
  const lots = [...S.lotteries.values()].sort((a, b) => (b.started_ms || 0) - (a.started_ms || 0)).slice(0, 3);
  if (!lots.length) {
    fill(box, h("span", { class: "muted" }, "No lottery running."));
    return;
  }
  fill(box, lots.map((l) => {
    const prize = prizeText(l.prize);
    const head = h("div", {}, h("b", {}, `🎁 ${l.title || "Lucky bag"}`), h("span", { class: "small muted" }, ` · ${l.winners_k} winner(s) · prize: ${prize}`));
    if (l.state === "ended") {
      const winners = l.winners || [];
      const won = S.me && winners.includes(S.me);
      return h("div", { class: "stack lottery", dataset: { lottery: l.id } }, head,
        h("div", { class: won ? "pill ok" : "pill" }, won ? "🎉 You won!" : "Drawn"),
        h("div", { class: "small lottery-winners" }, winners.length ? `Winners: ${winners.join(", ")}` : "No entrants, no winners."),
        h("div", { class: "small muted" }, `${l.proof ? l.proof.entrant_count : "?"} entrants · seed ${String(l.seed || "").slice(0, 16)}…`),
        h("a", { href: l.record_url || `/api/v1/lotteries/${encodeURIComponent(l.id)}`, target: "_blank", rel: "noopener", class: "small verify" }, "Verify the draw (public record)"));
    }
    const enterBtn = (l.rule || {}).kind === "keyword"
      ? h("button", { class: "primary enter", onclick: () => live.request("comment", { text: l.rule.keyword }).catch((e) => toast(e.message, "error")) }, `Comment “${l.rule.keyword}”`)
      : h("button", { class: "primary enter", disabled: l.entered, onclick: (ev) => enter(l, ev.target) }, l.entered ? "Entered ✓" : "Enter");
    return h("div", { class: "stack lottery", dataset: { lottery: l.id } }, head,
      h("div", { class: "small" }, `${ruleText(l)} · draw in `, cd(l.deadline_ms)),
      h("div", { class: "row" }, enterBtn, l.entered ? h("span", { class: "small entered" }, `You're in${l.position ? ` (#${l.position})` : ""}. Good luck!`) : null),
      h("div", { class: "small muted" }, `seed hash ${String(l.seed_hash || "").slice(0, 16)}… (committed before entries)`));
  }));
}

async function enter(l, btn) {
  btn.disabled = true;
  try {
    const r = await live.request("lottery.enter", { lottery_id: l.id });
    l.entered = true;
    l.position = r.d.position || l.position;
  } catch (e) {
    toast(`${e.code}: ${e.message}`, "error");
  }
  renderLotteries();
}

// ------------------------------------------------------------------ red packets
function addPacket(p) {
  const old = S.packets.get(p.id) || {};
  S.packets.set(p.id, { state: "open", mine: null, note: "", ...old, ...p });
}

function onGrabbed(d) {
  const p = S.packets.get(d.packet_id);
  if (p && !p.mine) {
    p.mine = { amount: d.amount, index: d.index };
    if (!d.duplicate) toast(`🧧 You grabbed ${fmtInt(d.amount)} coins!`, "ok", 6000);
  }
  if (typeof d.balance === "number") setCoins(d.balance);
  renderPackets();
}

function renderPackets() {
  const box = $("#redpackets");
  const now = Date.now();
  const items = [...S.packets.values()]
    .filter((p) => p.state === "ended" ? now - (p.ended_ms || now) < 60_000 : p.expires_ms > now)
    .sort((a, b) => (b.created_ms || 0) - (a.created_ms || 0)).slice(0, 4);
  box.hidden = !items.length;
  fill(box, items.map((p) => {
    const head = h("div", { class: "rp-head" }, h("b", {}, `🧧 ${p.greeting || "Red packet"}`),
      h("span", { class: "small" }, ` ${fmtInt(p.amount)} coins · ${p.count} shares · from ${p.by}`));
    let body;
    if (p.mine) {
      body = h("div", { class: "rp-mine" }, `You got ${fmtInt(p.mine.amount)} coins`);
    } else if (p.state === "ended") {
      body = h("div", { class: "small" }, "Ended");
    } else if (p.by === S.me) {
      body = h("div", { class: "small" }, ["Your packet · expires in ", cd(p.expires_ms)]);
    } else if (p.password) {
      body = h("button", { class: "rp-grab", onclick: () => live.request("comment", { text: p.password }).catch((e) => toast(e.message, "error")) },
        `Comment “${p.password}” to grab`);
    } else {
      body = h("button", { class: "rp-grab", onclick: (ev) => grabPacket(p, ev.target) }, "Grab 抢");
    }
    const s = p.summary;
    return h("div", { class: `rp ${p.state}`, dataset: { packet: p.id } }, head, body,
      p.followers_only && p.state !== "ended" ? h("div", { class: "small" }, "followers only") : null,
      p.note ? h("div", { class: "small rp-note" }, p.note) : null,
      s ? h("div", { class: "small rp-summary" }, `${s.grabbed}/${s.count} grabbed`,
        s.best ? ` · best luck ${s.best.user} (${fmtInt(s.best.amount)})` : "", " · ",
        h("a", { href: s.record_url, target: "_blank", rel: "noopener" }, "verify")) : null);
  }));
}

async function grabPacket(p, btn) {
  btn.disabled = true;
  try {
    const r = await live.request("redpacket.grab", { packet_id: p.id });
    onGrabbed(r.d);
  } catch (e) {
    p.note = e.message || e.code;
    if (e.code === "empty" || e.code === "expired" || e.code === "ended") p.state = e.code === "empty" ? "open" : "ended";
    renderPackets();
  }
}

// ------------------------------------------------------------------ clocks
// countdowns tick in place (no re-render, so a chosen coupon or a focused button stays)
function cd(deadlineMs) {
  return h("span", { class: "cd", dataset: { deadline: String(deadlineMs) } }, countdown(deadlineMs));
}

setInterval(() => {
  for (const el of document.querySelectorAll(".cd")) el.textContent = countdown(Number(el.dataset.deadline));
}, 1000);

loadCatalogue();
live.connect();

// ------------------------------------------------------------------ notifications (follower reach)
function setUnread(n) {
  S.unread = Math.max(0, n);
  const badge = $("#bell-count");
  badge.textContent = S.unread > 99 ? "99+" : String(S.unread);
  badge.hidden = S.unread === 0;
  $("#bell").setAttribute("aria-label", `notifications: ${S.unread} unread`);
}

function noticeText(n) {
  const what = n.title ? `: ${n.title}` : "";
  return n.kind === "host.live" || n.t === "host.live" ? `${n.host} is live${what}` : `Starting now${what} (${n.host})`;
}

function watchLink(n) {
  if (!n.room) return null;
  const q = new URLSearchParams({ room: n.room, token });
  return h("a", { href: `viewer.html?${q}` }, n.room === room ? "here" : "Watch");
}

function onReachNotice(t, d) {
  if (S.seenNotices.has(d.id)) return;
  S.seenNotices.add(d.id);
  setUnread(S.unread + 1);
  toast(noticeText({ ...d, t }), "ok", 8000);
  if (!$("#notices").hidden) loadNotices();
}

async function loadNotices() {
  try {
    const r = await api("/api/v1/me/notifications?limit=30");
    setUnread(r.unread);
    for (const n of r.items) S.seenNotices.add(n.id);
    fill($("#notice-list"), ...(r.items.length ? r.items.map((n) => h("li", { class: n.read ? "" : "unread" },
      h("span", {}, noticeText(n)), " ", h("span", { class: "small muted" }, new Date(n.created_ms).toLocaleString()), watchLink(n),
    )) : [h("li", { class: "muted" }, "Nothing yet. Follow a host to hear when they go live.")]));
  } catch (e) {
    fill($("#notice-list"), h("li", { class: "muted" }, `Could not load: ${e.message}`));
  }
}

function showNotices(open) {
  $("#notices").hidden = !open;
  $("#bell").setAttribute("aria-expanded", String(open));
  if (open) loadNotices();
}
$("#bell").addEventListener("click", () => showNotices($("#notices").hidden));
$("#notices-close").addEventListener("click", () => showNotices(false));

$("#notices-read").addEventListener("click", async () => {
  try {
    const r = await api("/api/v1/me/notifications/read", { method: "POST", body: { all: true } });
    setUnread(r.unread);
    loadNotices();
  } catch (e) {
    toast(`mark read failed: ${e.message}`, "error");
  }
});

// ------------------------------------------------------------------ the host: follow, upcoming schedules
function hostId() {
  return S.show && S.show.host && !S.show.host.startsWith("room:") ? S.show.host : null;
}

async function loadHost() {
  const host = hostId();
  const btn = $("#follow");
  if (!host) {
    btn.hidden = true;
    return;
  }
  const [mine, sched] = await Promise.allSettled([
    api("/api/v1/me/fanclubs"),
    api(`/api/v1/hosts/${encodeURIComponent(host)}/schedule`),
  ]);
  if (mine.status === "fulfilled") {
    const rel = (mine.value.fanclubs || []).find((f) => f.host === host);
    S.following = Boolean(rel && rel.following);
  }
  // shown once the relation is known: a tap before would be undone by this late answer
  btn.hidden = host === S.me;
  renderFollow();
  if (sched.status === "fulfilled") renderUpcoming(sched.value.schedules || []);
}

function renderFollow() {
  const host = hostId();
  $("#follow").textContent = S.following ? "Following ✓" : "Follow";
  $("#follow").className = S.following ? "" : "primary";
  setText("follow-note", S.following ? `You will hear when ${host} goes live.` : "Follow the host to hear when they go live.");
}

$("#follow").addEventListener("click", async () => {
  const host = hostId();
  if (!host) return;
  const on = !S.following;
  try {
    await api(`/api/v1/hosts/${encodeURIComponent(host)}/follow`, { method: on ? "POST" : "DELETE" });
    S.following = on;
    renderFollow();
  } catch (e) {
    toast(`follow failed: ${e.message}`, "error");
  }
});

function renderUpcoming(list) {
  const soon = list.filter((s) => s.state === "scheduled");
  fill($("#upcoming"), ...soon.map((s) => h("li", { class: "row" },
    h("span", { class: "grow" }, h("b", {}, s.title), ` · ${new Date(s.start_ms).toLocaleString()}`,
      s.products.length ? h("span", { class: "small muted" }, ` · ${s.products.length} product(s)`) : null),
    h("button", { type: "button", class: s.subscribed ? "" : "primary", onclick: () => remind(s, !s.subscribed) },
      s.subscribed ? "Reminder set ✓" : "Remind me"),
  )));
}

async function remind(s, on) {
  try {
    await api(`/api/v1/schedules/${encodeURIComponent(s.id)}/subscribe`, { method: on ? "POST" : "DELETE" });
    toast(on ? `We will remind you when “${s.title}” starts` : "Reminder removed", "ok");
    loadHost();
  } catch (e) {
    toast(`reminder failed: ${e.message}`, "error");
  }
}
