// The viewer's Pay: one way for every order, the cart sheet's and My orders' (flash sales),
// as this server takes payments (`welcome.payments`, docs/commerce.md "Pages"):
// - "provider": the order's intent (POST /api/v1/orders/{order}/payments, the same intent on a
//   retry), then the buyer's confirm at the provider (its `confirm_url` with the intent's
//   `client_secret`, cross-origin: the page's CSP allows the provider's origin). The order
//   reads "Paying…" until the server says it is paid (`order.paid`, pushed once the provider's
//   signed callback was verified): never on the confirm's answer. A declined card says so and
//   Pay is offered again.
// - "dev": the provider-less POST /api/v1/orders/{order}/pay of `livecommerce dev`.
// - "none": no Pay button, a line saying payments are not configured.
import { api, h, money } from "./common.js";

let mode = "dev"; // until the welcome says

/** `welcome.payments`: "provider" | "dev" | "none" (an older server sends none of it: dev). */
export function setPayments(m) {
  mode = m === "provider" || m === "none" ? m : "dev";
}

/** The order's Pay button, "Paying…" while a payment is under way, or the no-payments line. */
export function payControl(o, onclick) {
  if (mode === "none") return h("span", { class: "small muted no-pay" }, "Payments are not configured on this server.");
  return h("button", { type: "button", class: "ok pay", disabled: !!o.paying, onclick },
    o.paying ? "Paying…" : `Pay ${money(o.amount)}`);
}

/** Pay order `o` ({order_id, amount, payKey, note, paying, state}) with `coupon` (a flash-sale
 *  order's) or none; `changed()` re-renders, `paid(amount, answer)` is called when the server
 *  says the order is paid (the dev /pay's answer; with a provider, the order found paid: already,
 *  or by the watch below when an `order.paid` push was missed). Errors go to `o.note`
 *  (`o.state` "cancelled" when the pay window closed). */
export async function payOrder(o, { coupon, changed, paid }) {
  const path = `/api/v1/orders/${encodeURIComponent(o.order_id)}`;
  const body = coupon ? { coupon_id: coupon } : {};
  const headers = { "Idempotency-Key": o.payKey }; // one key per order: a retried click pays once
  if (mode !== "provider") {
    try {
      const r = await api(`${path}/pay`, { method: "POST", body, headers });
      if (r.outcome === "paid" || r.outcome === "already_paid") paid(r.amount, r);
    } catch (e) {
      refused(o, e);
    }
    changed();
    return;
  }
  o.paying = true;
  o.note = "Paying…";
  changed();
  try {
    const it = await api(`${path}/payments`, { method: "POST", body, headers });
    o.coupon = it.coupon_id || undefined; // the intent's coupon (locked by the first try) is the one used
    if (it.outcome === "paid" || it.outcome === "already_paid") {
      // the coupons covered it all: nothing to charge, the server paid it without the provider
      o.paying = false;
      o.note = "";
      paid(0, it);
      return;
    }
    let r;
    try {
      // the provider's client API: no token of ours goes there, the client secret is the credential
      r = await api(it.confirm_url, { method: "POST", body: { client_secret: it.client_secret }, token: null });
    } catch (e) {
      o.paying = false;
      o.note = e.code === "network" ? "Could not reach the payment provider: nothing was charged, try again."
        : `The payment provider refused the payment (${e.message}): try again.`;
      return;
    }
    if (r.status === "succeeded") {
      o.note = "Paying… waiting for the payment provider to confirm.";
      watch(o, path, { changed, paid });
    } else {
      o.paying = false;
      const why = r.last_payment_error && r.last_payment_error.message;
      o.note = `Payment declined${why ? `: ${why}` : ""}. Nothing was charged: try again or use another card.`;
    }
  } catch (e) {
    o.paying = false;
    if (e.code === "already_paid") {
      o.note = "";
      paid(o.amount, null);
    } else {
      refused(o, e);
    }
  } finally {
    changed();
  }
}

const WATCH_MS = 4000;

/** While `o` is paying, read the order now and then: the `order.paid` push is how the page
 *  learns it, this is for a push missed (a reconnect while paying). Paid or cancelled as the
 *  server has it, never on the provider's word. */
function watch(o, path, { changed, paid }) {
  const tick = async () => {
    if (!o.paying || o.state !== "reserved") return;
    try {
      const r = await api(path);
      const state = r.order && r.order.state;
      if (state === "paid") return paid(r.order.amount, null);
      if (state === "cancelled") {
        o.paying = false;
        o.state = "cancelled";
        o.note = "Too late: the payment window closed.";
        return changed();
      }
    } catch {
      // the push may still come: keep watching
    }
    setTimeout(tick, WATCH_MS);
  };
  setTimeout(tick, WATCH_MS);
}

function refused(o, e) {
  const late = e.code === "expired" || e.code === "already_cancelled";
  o.note = late ? "Too late: the payment window closed." : `Payment not started: ${e.message}`;
  if (late) o.state = "cancelled";
}
