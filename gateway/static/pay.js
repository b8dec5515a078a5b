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

/** Pay order `o` ({order_id, amount, payKey, note, paying}) with `coupon` (a flash-sale order's)
 *  or none; `changed()` re-renders. Resolves to {outcome, amount, discount} when the server
 *  says the order is paid now (the dev /pay, or a provider payment found already paid), else
 *  null: with a provider the order is paid when `order.paid` arrives. Errors go to `o.note`
 *  (`o.state` "cancelled" when the pay window closed). */
export async function payOrder(o, { coupon, changed }) {
  const path = `/api/v1/orders/${encodeURIComponent(o.order_id)}`;
  const body = coupon ? { coupon_id: coupon } : {};
  const headers = { "Idempotency-Key": o.payKey }; // one key per order: a retried click pays once
  if (mode !== "provider") {
    try {
      const r = await api(`${path}/pay`, { method: "POST", body, headers });
      return r.outcome === "paid" || r.outcome === "already_paid" ? r : null;
    } catch (e) {
      refused(o, e);
      return null;
    }
  }
  o.paying = true;
  o.note = "Paying…";
  changed();
  try {
    const it = await api(`${path}/payments`, { method: "POST", body, headers });
    let r;
    try {
      // the provider's client API: no token of ours goes there, the client secret is the credential
      r = await api(it.confirm_url, { method: "POST", body: { client_secret: it.client_secret }, token: null });
    } catch (e) {
      o.paying = false;
      o.note = e.code === "network" ? "Could not reach the payment provider: nothing was charged, try again."
        : `The payment provider refused the payment (${e.message}): try again.`;
      return null;
    }
    if (r.status === "succeeded") {
      o.note = "Paying… waiting for the payment provider to confirm.";
    } else {
      o.paying = false;
      const why = r.last_payment_error && r.last_payment_error.message;
      o.note = `Payment declined${why ? `: ${why}` : ""}. Nothing was charged: try again or use another card.`;
    }
    return null;
  } catch (e) {
    o.paying = false;
    if (e.code === "already_paid") {
      o.note = "";
      return { outcome: "already_paid", amount: o.amount };
    }
    refused(o, e);
    return null;
  } finally {
    changed();
  }
}

function refused(o, e) {
  const late = e.code === "expired" || e.code === "already_cancelled";
  o.note = late ? "Too late: the payment window closed." : `Payment not started: ${e.message}`;
  if (late) o.state = "cancelled";
}
