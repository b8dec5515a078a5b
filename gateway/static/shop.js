// The viewer's shop at list price (issue 19 part 7), in bottom sheets:
//
// - Products (小黄车): the room's list as the host curates it (`welcome.bag`, then each
//   `bag.changed`; the copy with the highest `v` wins), the item being explained now (讲解中)
//   highlighted and first to the eye.
// - A product: GET /api/v1/products/{id}; one row of chips per option (colour, size, …) from
//   its SKUs; a chip whose every matching SKU is sold out (or archived) is disabled; the chosen
//   SKU shows its own price and stock; Add to cart / Buy now.
// - The cart: GET/POST/PUT/DELETE /api/v1/rooms/{room}/cart… (lines, quantities, remove,
//   subtotal, the server's proposed coupons chosen by default, or another eligible coupon, or
//   none); Checkout (POST …/cart/checkout with an Idempotency-Key kept until the order comes
//   back, so a retried tap orders once); Pay; then the order's way in My orders.
// All user text goes in as text nodes (h(), fill()).

import { $, api, countdown, fill, fmtInt, h, money, newId } from "./common.js";
import { payControl, payOrder } from "./pay.js";
import { closeSheet, openSheet, sheetOpen } from "./sheets.js";

const ATTR_SEP = " · ";

function priceRange(lo, hi) {
  return hi && hi !== lo ? `${money(lo)} – ${money(hi)}` : money(lo);
}

function attrsText(attrs) {
  return Object.values(attrs || {}).join(ATTR_SEP);
}

function thumb(image, cls = "thumb") {
  // images are https URLs of the catalogue; the CSP allows only this origin's, so a product
  // without a local image shows the bag icon
  return image && image.startsWith("/") ? h("img", { class: cls, src: image, alt: "" }) : h("div", { class: cls }, "🛍️");
}

function buyable(sku) {
  return sku.state !== "archived" && (sku.stock ?? 0) > 0;
}

/**
 * The shop of one room. `hooks`: onOrder(order) (a checkout's order, for My orders),
 * onPaid(order_id, amount), saleOf(product_id) (the live flash sale of the product or null).
 */
export class Shop {
  constructor(room, hooks) {
    this.room = room;
    this.hooks = hooks;
    this.path = `/api/v1/rooms/${encodeURIComponent(room)}`;
    this.bag = { items: [], explaining: null, v: -1 };
    this.product = null; // the product sheet's product (GET /api/v1/products/{id})
    this.chosen = {}; // option name -> value
    this.qty = 1;
    this.msg = "";
    this.cart = null; // the last Cart the server answered
    this.cartAvailable = true; // false when this gateway has no cart routes
    this.couponChoice = "proposed"; // "proposed" | "" (none) | a coupon id
    this.checkoutKey = null; // Idempotency-Key of the checkout in flight (kept for a retry)
    this.orders = new Map(); // cart orders placed from this page: order_id -> order + {state, payKey, note}
    this.cartMsg = "";
    $("#open-bag").addEventListener("click", () => this.openBag());
    $("#open-cart").addEventListener("click", () => this.openCart());
    $("#product-back").addEventListener("click", () => this.openBag());
  }

  // ---------------------------------------------------------------- the room's list
  setBag(bag) {
    if (!bag || typeof bag.v !== "number" || bag.v < this.bag.v) return;
    this.bag = { items: bag.items || [], explaining: bag.explaining ?? null, v: bag.v };
    const n = this.bag.items.length;
    $("#bag-count").textContent = String(n);
    $("#bag-count").hidden = n === 0;
    this.renderBag();
  }

  explainingItem() {
    return this.bag.items.find((i) => i.product_id === this.bag.explaining) || null;
  }

  openBag() {
    openSheet("bag-sheet");
    this.renderBag();
  }

  renderBag() {
    const items = this.bag.items;
    fill($("#bag-list"), items.length ? items.map((it, i) => {
      const now = it.product_id === this.bag.explaining;
      return h("li", { class: `bag-item ${now ? "explaining" : ""}`, dataset: { product: it.product_id } },
        h("span", { class: "bag-n" }, String(i + 1)),
        thumb(it.image, "thumb small-thumb"),
        h("span", { class: "grow" },
          now ? h("span", { class: "pill live explain-tag" }, "讲解中") : null,
          h("b", { class: "bag-name" }, it.name),
          h("div", { class: "small muted" }, it.skus > 1 ? `${fmtInt(it.skus)} options` : "")),
        h("span", { class: "price-now small-price" }, priceRange(it.price_min, it.price_max)),
        h("button", { type: "button", class: "primary open-product", onclick: () => this.openProduct(it.product_id) }, "Buy"));
    }) : h("li", { class: "muted" }, "No products listed in this room yet."));
  }

  // ---------------------------------------------------------------- one product, its SKUs
  async openProduct(pid) {
    openSheet("product-sheet");
    const item = this.bag.items.find((i) => i.product_id === pid);
    $("#product-sheet-h").textContent = item ? item.name : "Product";
    $("#product-back").hidden = !this.bag.items.length;
    fill($("#sku-box"), h("span", { class: "muted" }, "Loading…"));
    try {
      this.product = await api(`/api/v1/products/${encodeURIComponent(pid)}`);
    } catch (e) {
      fill($("#sku-box"), h("span", { class: "muted" }, `Could not load the product: ${e.message}`));
      return;
    }
    $("#product-sheet-h").textContent = this.product.name;
    const skus = this.product.skus || [];
    this.chosen = {};
    // one option value only, or a single buyable SKU: chosen for the viewer
    for (const o of this.product.options || []) if (o.values.length === 1) this.chosen[o.name] = o.values[0];
    const open = skus.filter(buyable);
    if (open.length === 1 && (this.product.options || []).every((o) => this.chosenOk(o.name, open[0].attrs[o.name]))) {
      Object.assign(this.chosen, open[0].attrs);
    }
    this.qty = 1;
    this.msg = "";
    this.renderProduct();
  }

  chosenOk(name, value) {
    return this.chosen[name] === undefined || this.chosen[name] === value;
  }

  // the SKUs that match the chosen values, with `name` taking `value`
  matching(name, value) {
    const want = { ...this.chosen, [name]: value };
    return (this.product.skus || []).filter((s) => Object.entries(want).every(([k, v]) => s.attrs[k] === v));
  }

  // choose `value` for option `name`, dropping the other choices no buyable SKU has with it
  pick(name, value) {
    this.chosen[name] = value;
    const skus = (this.product.skus || []).filter((s) => s.attrs[name] === value && buyable(s));
    for (const k of Object.keys(this.chosen)) {
      if (k !== name && !skus.some((s) => s.attrs[k] === this.chosen[k])) delete this.chosen[k];
    }
  }

  selectedSku() {
    const p = this.product;
    if (!p) return null;
    const opts = p.options || [];
    if (!opts.length) return (p.skus || [])[0] || null;
    if (!opts.every((o) => this.chosen[o.name] !== undefined)) return null;
    return (p.skus || []).find((s) => opts.every((o) => s.attrs[o.name] === this.chosen[o.name])) || null;
  }

  renderProduct() {
    const p = this.product;
    const sku = this.selectedSku();
    const skus = p.skus || [];
    const active = skus.filter((s) => s.state !== "archived");
    const lo = Math.min(...active.map((s) => s.price));
    const hi = Math.max(...active.map((s) => s.price));
    const sale = this.hooks.saleOf(p.id);
    const groups = (p.options || []).map((o) => h("div", { class: "opt", dataset: { option: o.name } },
      h("div", { class: "small muted" }, o.name),
      h("div", { class: "chips" }, o.values.map((v) => {
        // sold out: no SKU with this value can be bought; "other": it can, but not with the
        // other values chosen now (picking it drops those, as a shop's picker does)
        const soldOut = !skus.some((s) => s.attrs[o.name] === v && buyable(s));
        const other = !soldOut && !this.matching(o.name, v).some(buyable);
        const on = this.chosen[o.name] === v;
        return h("button", {
          type: "button", class: `chip ${on ? "on" : ""} ${other ? "other" : ""}`, "aria-pressed": String(on), disabled: soldOut,
          title: soldOut ? "sold out" : other ? "not with the options chosen: picking it clears them" : null, dataset: { value: v },
          onclick: () => {
            if (on) delete this.chosen[o.name];
            else this.pick(o.name, v);
            this.qty = 1;
            this.msg = "";
            this.renderProduct();
          },
        }, v, soldOut ? h("span", { class: "small" }, " · sold out") : null);
      }))));
    const stock = sku ? (sku.state === "archived" ? 0 : sku.stock ?? 0) : null;
    const max = Math.max(1, Math.min(99, stock ?? 99));
    this.qty = Math.min(this.qty, max);
    const can = this.cartAvailable && sku && stock > 0;
    const stockText = sku === null
      ? (p.options || []).filter((o) => this.chosen[o.name] === undefined).map((o) => o.name).join(", ")
      : "";
    fill($("#sku-box"),
      h("div", { class: "product-card" }, thumb(sku && sku.image ? sku.image : p.image),
        h("div", { class: "grow" },
          h("div", { class: "name" }, p.name),
          h("div", {}, h("span", { class: "price-now", id: "sku-price" }, sku ? money(sku.price) : priceRange(lo, hi))),
          h("div", { class: "small", id: "sku-stock" },
            sku ? (stock > 0 ? `${fmtInt(stock)} left` : "Sold out") : `Choose ${stockText}`),
          sale ? h("div", { class: "small warn-text" }, `⚡ Flash sale live: ${money(sale.price)} at checkout, limit ${sale.per_user_limit ?? 1}`) : null,
          p.description ? h("div", { class: "small muted" }, p.description) : null)),
      groups,
      h("div", { class: "row qty" },
        h("span", { class: "small muted" }, "Quantity"),
        h("button", { type: "button", class: "step", "aria-label": "one less", disabled: this.qty <= 1, onclick: () => { this.qty -= 1; this.renderProduct(); } }, "−"),
        h("b", { id: "sku-qty" }, String(this.qty)),
        h("button", { type: "button", class: "step", "aria-label": "one more", disabled: !sku || this.qty >= max, onclick: () => { this.qty += 1; this.renderProduct(); } }, "+")),
      h("div", { class: "row sheet-actions" },
        h("button", { type: "button", id: "add-to-cart", class: "grow", disabled: !can, onclick: (ev) => this.addToCart(sku, ev.target) }, "Add to cart"),
        h("button", { type: "button", id: "buy-now", class: "primary grow", disabled: !can, onclick: (ev) => this.buyNow(sku, ev.target) },
          sku && stock > 0 ? `Buy now ${money(sku.price * this.qty)}` : "Buy now")),
      h("div", { class: "small", id: "sku-msg" }, this.cartAvailable ? this.msg : "Checkout at list price is not available on this server."));
  }

  async addToCart(sku, btn) {
    btn.disabled = true;
    try {
      this.setCart(await api(`${this.path}/cart/items`, { method: "POST", body: { product_id: this.product.id, sku: sku.id, qty: this.qty } }));
      this.msg = `Added ${this.qty} × ${attrsText(sku.attrs) || this.product.name} to your cart`;
    } catch (e) {
      this.msg = this.refusal(e);
    }
    this.renderProduct();
  }

  async buyNow(sku, btn) {
    btn.disabled = true;
    const lines = [{ product_id: this.product.id, sku: sku.id, qty: this.qty }];
    const order = await this.checkout({ lines }, (m) => { this.msg = m; });
    if (order) {
      this.openCart();
      return;
    }
    this.renderProduct();
  }

  // ---------------------------------------------------------------- the cart
  setCart(cart) {
    if (!cart || !Array.isArray(cart.lines)) return;
    if (this.cart && typeof cart.v === "number" && typeof this.cart.v === "number" && cart.v < this.cart.v) return;
    this.cart = cart;
    const n = cart.qty || 0;
    $("#cart-count").textContent = String(n);
    $("#cart-count").hidden = n === 0;
    const ids = new Set((cart.coupons && cart.coupons.eligible || []).map((c) => c.coupon_id));
    if (this.couponChoice !== "proposed" && this.couponChoice !== "" && !ids.has(this.couponChoice)) this.couponChoice = "proposed";
    if (sheetOpen("cart-sheet")) this.renderCart();
  }

  async loadCart() {
    try {
      this.setCart(await api(`${this.path}/cart`));
      this.cartAvailable = true;
    } catch (e) {
      if (e.status === 404 || e.status === 405) {
        this.cartAvailable = false; // a gateway without the cart routes: no cart button
        $("#open-cart").hidden = true;
      }
    }
  }

  openCart() {
    openSheet("cart-sheet");
    this.renderCart();
    this.loadCart().then(() => this.renderCart());
  }

  async setQty(line, qty) {
    try {
      const path = `${this.path}/cart/items/${encodeURIComponent(line.product_id)}/${encodeURIComponent(line.sku)}`;
      this.setCart(qty > 0 ? await api(path, { method: "PUT", body: { qty } }) : await api(path, { method: "DELETE" }));
      this.cartMsg = "";
    } catch (e) {
      this.cartMsg = this.refusal(e);
    }
    this.renderCart();
  }

  // what the chosen coupons take off: the proposal's, one eligible coupon's, or nothing
  discount() {
    const c = (this.cart && this.cart.coupons) || {};
    if (this.couponChoice === "proposed") return c.discount || 0;
    if (!this.couponChoice) return 0;
    const one = (c.eligible || []).find((x) => x.coupon_id === this.couponChoice);
    return one ? Math.min(one.discount, this.cart.subtotal) : 0;
  }

  couponText(c) {
    const off = c.kind === "percent" ? `${c.value}% off` : `${money(c.value)} off`;
    return `${c.scope === "platform" ? "platform" : "shop"} coupon: ${off}${c.threshold ? ` over ${money(c.threshold)}` : ""}`;
  }

  renderCart() {
    const box = $("#cart-box");
    const cart = this.cart;
    const orders = [...this.orders.values()].reverse().slice(0, 3).map((o) => this.orderBlock(o));
    if (!this.cartAvailable) {
      fill(box, orders, h("span", { class: "muted" }, "Checkout at list price is not available on this server."));
      return;
    }
    if (!cart) {
      fill(box, orders, h("span", { class: "muted" }, "Loading…"));
      return;
    }
    const lines = cart.lines.map((l) => h("li", { class: `cart-line ${l.ok ? "" : "problem"}`, dataset: { product: l.product_id, sku: l.sku } },
      thumb(l.image, "thumb small-thumb"),
      h("span", { class: "grow" }, h("b", {}, l.name || l.product_id), h("div", { class: "small muted" }, attrsText(l.attrs)),
        h("div", { class: "small" }, h("span", { class: "price-now small-price" }, money(l.unit_price)),
          l.list_price && l.list_price !== l.unit_price ? h("span", { class: "price-was" }, money(l.list_price)) : null,
          l.sale_id ? " ⚡ sale" : ""),
        l.problem ? h("div", { class: "small bad-text line-problem" },
          l.problem === "sold_out" && l.available > 0 ? `Only ${fmtInt(l.available)} left` : PROBLEMS[l.problem] || l.problem) : null),
      h("span", { class: "row qty" },
        h("button", { type: "button", class: "step less", "aria-label": "one less", onclick: () => this.setQty(l, l.qty - 1) }, "−"),
        h("b", { class: "line-qty" }, String(l.qty)),
        h("button", { type: "button", class: "step more", "aria-label": "one more", disabled: l.qty >= 99 || (l.available ?? 99) <= l.qty,
          onclick: () => this.setQty(l, l.qty + 1) }, "+"),
        h("button", { type: "button", class: "small remove", onclick: () => this.setQty(l, 0) }, "Remove"))));
    const gifts = (cart.gifts || []).map((g) => h("li", { class: "cart-line gift" }, `🎁 free gift: ${g.qty} × ${g.name || g.product_id} (${g.sku})`));
    if (!lines.length) {
      fill(box, orders, h("span", { class: "muted", id: "cart-empty" }, "Your cart is empty: pick something in 🛍 Products."));
      return;
    }
    const c = cart.coupons || { proposed: [], eligible: [], ineligible: [] };
    const eligible = c.eligible || [];
    const opts = [];
    if ((c.proposed || []).length) {
      const names = c.proposed.map((id) => eligible.find((e) => e.coupon_id === id)).filter(Boolean).map((e) => this.couponText(e));
      opts.push(h("option", { value: "proposed" }, `Best: −${money(c.discount)} (${names.join(" + ") || "proposed"})`));
    }
    for (const e of eligible) if (!(c.proposed || []).includes(e.coupon_id) || c.proposed.length > 1) {
      opts.push(h("option", { value: e.coupon_id }, `${this.couponText(e)} (−${money(e.discount)})`));
    }
    opts.push(h("option", { value: "" }, "No coupon"));
    if (this.couponChoice === "proposed" && !(c.proposed || []).length) this.couponChoice = "";
    const discount = this.discount();
    const total = Math.max(0, cart.subtotal - discount);
    const select = h("select", { id: "cart-coupon", "aria-label": "coupon", onchange: (ev) => { this.couponChoice = ev.target.value; this.renderCart(); } }, opts);
    select.value = this.couponChoice;
    const soon = (c.ineligible || []).filter((x) => x.reason === "below_threshold")
      .map((x) => h("div", { class: "small muted" }, `Spend ${money(x.threshold - cart.subtotal)} more for ${this.couponText({ ...x, kind: x.kind || "full_reduction" })}`));
    // the room's coupons not claimed yet that would take more off this cart (the server says how much)
    const offers = (c.claimable || []).filter((x) => x.saves > 0)
      .map((x) => h("div", { class: "row claim-offer", "data-drop": x.drop_id },
        h("span", { class: "grow small" }, `${this.couponText(x)}: claim it and save ${money(x.saves)}`),
        h("button", { type: "button", class: "claim-in-cart", onclick: (ev) => this.claimInCart(x.drop_id, ev.target) }, "Claim")));
    const okLines = cart.lines.filter((l) => l.ok).length;
    const blocked = okLines < cart.lines.length; // the checkout takes the whole cart: a refused line refuses it
    fill(box,
      orders,
      h("ul", { class: "list cart-lines" }, lines, gifts),
      h("div", { class: "row" }, h("span", { class: "grow muted" }, `Subtotal (${fmtInt(cart.qty)} item${cart.qty === 1 ? "" : "s"})`), h("b", { id: "cart-subtotal" }, money(cart.subtotal))),
      eligible.length ? h("label", { class: "coupon-pick" }, "Coupon", select)
        : offers.length ? null : h("div", { class: "small muted" }, "No coupon of yours applies to this cart."),
      offers,
      soon,
      discount ? h("div", { class: "row" }, h("span", { class: "grow muted" }, "Coupon"), h("b", { id: "cart-discount" }, `−${money(discount)}`)) : null,
      h("div", { class: "row" }, h("span", { class: "grow" }, "Total"), h("b", { class: "price-now", id: "cart-total" }, money(total))),
      h("button", { type: "button", id: "checkout", class: "primary", disabled: !okLines || blocked, onclick: (ev) => this.checkoutCart(ev.target) }, `Checkout ${money(total)}`),
      blocked ? h("div", { class: "small warn-text", id: "cart-blocked" }, "Change or remove the lines marked above to check out.") : null,
      h("div", { class: "small", id: "cart-msg" }, this.cartMsg));
  }

  /** Claim one of the room's coupons from the cart; the cart read again proposes it. */
  async claimInCart(dropId, btn) {
    btn.disabled = true;
    try {
      await api(`/api/v1/coupons/${encodeURIComponent(dropId)}/claim`, { method: "POST" });
      this.couponChoice = "proposed";
      this.cartMsg = "";
    } catch (e) {
      this.cartMsg = e.code === "already_claimed" ? "" : `Could not claim that coupon: ${e.message}`;
    }
    try {
      this.setCart(await api(`${this.path}/cart`));
    } catch (e) {
      this.cartMsg = e.message;
    }
    this.renderCart();
  }

  async checkoutCart(btn) {
    btn.disabled = true;
    const body = this.couponChoice === "proposed" ? {} : { coupon_ids: this.couponChoice ? [this.couponChoice] : [] };
    await this.checkout(body, (m) => { this.cartMsg = m; });
    this.renderCart();
  }

  /** POST …/cart/checkout; the key is kept until an answer, so a retried tap orders once. */
  async checkout(body, say) {
    const key = this.checkoutKey || (this.checkoutKey = newId("co-"));
    try {
      const o = await api(`${this.path}/cart/checkout`, { method: "POST", body, headers: { "Idempotency-Key": key } });
      this.checkoutKey = null;
      const order = { ...o, state: o.state || "reserved", payKey: newId("pay-"), note: "" };
      this.orders.set(o.order_id, order);
      this.hooks.onOrder(order);
      say(`Order placed: pay ${money(o.amount)} before the timer runs out.`);
      this.cartMsg = "";
      this.loadCart();
      return order;
    } catch (e) {
      if (e.code !== "network") this.checkoutKey = null; // refused: nothing reserved, a new try is a new order
      if (e.status === 409) await this.loadCart(); // the lines say why (sold out, over the limit, …)
      say(this.refusal(e));
      return null;
    }
  }

  orderBlock(o) {
    const status = o.state === "paid"
      ? h("span", { class: "pill ok" }, `Paid ✓ ${money(o.paid_amount ?? o.amount)}`)
      : o.state === "cancelled" ? h("span", { class: "pill bad" }, "Cancelled")
      : h("span", { class: "pill warn" }, "Reserved · pay within ", h("span", { class: "cd", dataset: { deadline: String(o.pay_by_ms) } }, countdown(o.pay_by_ms)));
    const q = new URLSearchParams({ room: this.room, token: new URLSearchParams(location.search).get("token") || "" });
    return h("div", { class: "order cart-order", dataset: { order: o.order_id } },
      h("div", {}, `${fmtInt(o.qty)} item${o.qty === 1 ? "" : "s"} · `, o.discount ? [h("span", { class: "price-was" }, money(o.subtotal)), " "] : null,
        h("b", {}, money(o.amount))),
      h("div", { class: "row" }, status,
        o.state === "reserved" ? payControl(o, () => this.pay(o)) : null,
        o.state !== "cancelled" ? h("a", { class: "small track", href: `orders.html?${q}` }, o.state === "paid" ? "Track the order" : "My orders") : null),
      o.note ? h("div", { class: "small" }, o.note) : null);
  }

  pay(o) {
    return payOrder(o, { changed: () => this.renderCart(), paid: (amount) => this.paid(o.order_id, amount) });
  }

  /** A cart order paid (here, or `order.paid` pushed by the orders worker). */
  paid(id, amount) {
    const o = this.orders.get(id);
    if (!o) return;
    o.state = "paid";
    o.paying = false;
    if (amount !== undefined) o.paid_amount = amount;
    o.note = "Paid: the host ships it; follow its parcels in My orders.";
    this.hooks.onPaid(id, o.paid_amount);
    if (sheetOpen("cart-sheet")) this.renderCart();
  }

  cancelled(id, reason) {
    const o = this.orders.get(id);
    if (!o || o.state !== "reserved") return;
    o.state = "cancelled";
    o.note = reason === "timeout" ? "Payment time-out: the units went back on sale." : `cancelled (${reason || "buyer"})`;
    if (sheetOpen("cart-sheet")) this.renderCart();
  }

  refusal(e) {
    if (e.status === 404 && e.code !== "not_found") {
      this.cartAvailable = false;
      $("#open-cart").hidden = true;
      return "Checkout at list price is not available on this server.";
    }
    const why = PROBLEMS[e.code] || e.message || e.code;
    const line = e.status === 409 ? this.refusedLine(e) : null;
    if (!line) return why;
    const attrs = attrsText(line.attrs);
    const item = `${line.name || line.product_id}${attrs ? ` (${attrs})` : ""}`;
    if (e.code === "price_changed") return `The price of ${item} changed: check the new price and check out again. Nothing was ordered.`;
    return `${why}: ${item}. Nothing was ordered.`;
  }

  /** The line a checkout refusal names ({product_id, sku} in the error, or its message's
   *  "product/sku: …"), from the cart or the product sheet; null if none. */
  refusedLine(e) {
    const d = e.details || {};
    let pid = d.product_id;
    let sku = d.sku;
    if (!pid) {
      const m = /^([A-Za-z0-9_.-]+)(?:\/([A-Za-z0-9_.-]+))?: /.exec(e.message || "");
      if (!m) return null;
      [pid, sku] = [m[1], m[2]];
    }
    const lines = (this.cart && this.cart.lines) || [];
    const line = lines.find((l) => l.product_id === pid && (!sku || l.sku === sku)) || lines.find((l) => l.product_id === pid);
    if (line) return line;
    const p = this.product;
    if (p && p.id === pid) {
      const s = (p.skus || []).find((x) => x.id === sku);
      return { product_id: pid, name: p.name, attrs: s ? s.attrs : {} };
    }
    return { product_id: pid, name: pid, attrs: {} };
  }
}

const PROBLEMS = {
  sold_out: "Sold out",
  limit_reached: "You reached the per-person limit for this item",
  price_changed: "The price changed: check the new price and check out again",
  sku_archived: "This option is no longer sold",
  archived: "No longer sold",
  no_product: "No longer sold",
  no_sku: "This option is no longer sold",
  not_started: "The sale has not started yet",
  ended: "The sale has ended",
  room_ended: "The show has ended",
  cart_full: "Your cart is full (50 lines)",
  qty_too_large: "At most 99 of one item",
  cart_empty: "Your cart is empty",
  coupon_not_usable: "That coupon cannot be used on this order",
  too_many_coupons: "At most one platform and one shop coupon",
};

export { closeSheet };
