"""Every HTTP route and WebSocket command of the gateway, in one table.

Each entry names the capability method that serves it (``gateway.wiring`` builds the
objects). ``tests/test_openapi.py`` holds the HTTP table to the OpenAPI document.
"""

from __future__ import annotations

from .hooks import CommandHandler, Route, StaticRoute
from .pages import STATIC_DIR
from .wiring import Services


def http_routes(s: Services) -> list[Route]:
    return [
        # health and metrics
        Route("GET", "/healthz", s.health.healthz),
        Route("GET", "/readyz", s.health.readyz),
        Route("GET", "/metrics", s.health.metrics),
        Route("GET", "/api/v1/rooms/{room}/online", s.health.room_stats),
        # rooms: comments (and announcements) and likes
        Route("POST", "/api/v1/rooms/{room}/announce", s.comments.announce),
        Route("GET", "/api/v1/rooms/{room}/likes", s.likes.get_likes),
        # rooms: life cycle, the pin
        Route("POST", "/api/v1/rooms", s.rooms.http_create),
        Route("GET", "/api/v1/rooms/{room}", s.rooms.http_get),
        Route("POST", "/api/v1/rooms/{room}/live", s.rooms.http_live),
        Route("POST", "/api/v1/rooms/{room}/end", s.rooms.http_end),
        Route("POST", "/api/v1/rooms/{room}/pin", s.rooms.http_pin),
        Route("DELETE", "/api/v1/rooms/{room}/pin", s.rooms.http_unpin),
        # rooms: moderation (moderators, mutes, kicks, bans, chat settings, deleted comments,
        # reports), platform bans and the audit log
        Route("GET", "/api/v1/rooms/{room}/moderation", s.moderation.http_state),
        Route("PUT", "/api/v1/rooms/{room}/moderators/{user}", s.moderation.http_moderator_add),
        Route("DELETE", "/api/v1/rooms/{room}/moderators/{user}", s.moderation.http_moderator_remove),
        Route("POST", "/api/v1/rooms/{room}/mutes", s.moderation.http_mute),
        Route("DELETE", "/api/v1/rooms/{room}/mutes/{user}", s.moderation.http_unmute),
        Route("POST", "/api/v1/rooms/{room}/kicks", s.moderation.http_kick),
        Route("POST", "/api/v1/rooms/{room}/bans", s.moderation.http_ban),
        Route("DELETE", "/api/v1/rooms/{room}/bans/{user}", s.moderation.http_unban),
        Route("PUT", "/api/v1/rooms/{room}/chat", s.moderation.http_chat),
        Route("DELETE", "/api/v1/rooms/{room}/comments/{seq}", s.moderation.http_delete_comment),
        Route("POST", "/api/v1/rooms/{room}/reports", s.moderation.http_report),
        Route("GET", "/api/v1/rooms/{room}/reports", s.moderation.http_reports),
        Route("POST", "/api/v1/reports/{report}/resolve", s.moderation.http_resolve),
        Route("POST", "/api/v1/platform/bans", s.moderation.http_platform_ban),
        Route("GET", "/api/v1/platform/bans", s.moderation.http_platform_bans),
        Route("DELETE", "/api/v1/platform/bans/{user}", s.moderation.http_platform_unban),
        Route("GET", "/api/v1/moderation/audit", s.moderation.http_audit),
        # the catalogue: products with SKUs
        Route("POST", "/api/v1/products", s.catalog.http_create),
        Route("GET", "/api/v1/products", s.catalog.http_list),
        Route("GET", "/api/v1/products/{product}", s.catalog.http_get),
        Route("PATCH", "/api/v1/products/{product}", s.catalog.http_patch),
        Route("DELETE", "/api/v1/products/{product}", s.catalog.http_archive),
        Route("POST", "/api/v1/products/{product}/skus", s.catalog.http_add_sku),
        Route("PATCH", "/api/v1/products/{product}/skus/{sku}", s.catalog.http_patch_sku),
        Route("DELETE", "/api/v1/products/{product}/skus/{sku}", s.catalog.http_archive_sku),
        # the room's product list (小黄车)
        Route("GET", "/api/v1/rooms/{room}/bag", s.bags.http_get),
        Route("PUT", "/api/v1/rooms/{room}/bag", s.bags.http_put),
        Route("POST", "/api/v1/rooms/{room}/bag/items", s.bags.http_add),
        Route("DELETE", "/api/v1/rooms/{room}/bag/items/{product}", s.bags.http_remove),
        Route("PUT", "/api/v1/rooms/{room}/bag/order", s.bags.http_order),
        Route("PUT", "/api/v1/rooms/{room}/bag/explaining", s.bags.http_explain),
        # the viewer's cart per room and its checkout (cart orders)
        Route("GET", "/api/v1/rooms/{room}/cart", s.carts.http_get),
        Route("DELETE", "/api/v1/rooms/{room}/cart", s.carts.http_clear),
        Route("POST", "/api/v1/rooms/{room}/cart/items", s.carts.http_add),
        Route("PUT", "/api/v1/rooms/{room}/cart/items/{product}/{sku}", s.carts.http_set),
        Route("DELETE", "/api/v1/rooms/{room}/cart/items/{product}/{sku}", s.carts.http_remove),
        Route("POST", "/api/v1/rooms/{room}/cart/checkout", s.carts.http_checkout),
        # flash sales: campaigns, the sale lifecycle, buy; orders; campaign funnels
        Route("POST", "/api/v1/campaigns", s.sales.create_campaigns),
        Route("GET", "/api/v1/campaigns", s.sales.list_campaigns),
        Route("POST", "/api/v1/sales/{sale}/start", s.sales.sale_start),
        Route("POST", "/api/v1/sales/{sale}/stop", s.sales.sale_stop),
        Route("GET", "/api/v1/sales/{sale}/stats", s.sales.sale_stats),
        Route("POST", "/api/v1/sales/{sale}/buy", s.sales.http_buy),
        Route("GET", "/api/v1/orders", s.orders.list_orders),
        Route("GET", "/api/v1/orders/{order}", s.orders.get_order),
        Route("POST", "/api/v1/orders/{order}/pay", s.orders.pay_order),
        Route("POST", "/api/v1/orders/{order}/cancel", s.orders.cancel_order),
        # the payment boundary: intents, the provider's signed callbacks, ops' view
        Route("POST", "/api/v1/orders/{order}/payments", s.payments.http_create),
        Route("GET", "/api/v1/orders/{order}/payments", s.payments.http_order),
        # fulfilment: addresses, shipments, deliveries (ops or the carrier's signed callback),
        # receipt, return parcels, orders to ship
        Route("GET", "/api/v1/me/addresses", s.fulfilment.http_addresses),
        Route("POST", "/api/v1/me/addresses", s.fulfilment.http_address_add),
        Route("PATCH", "/api/v1/me/addresses/{address}", s.fulfilment.http_address_patch),
        Route("DELETE", "/api/v1/me/addresses/{address}", s.fulfilment.http_address_delete),
        Route("POST", "/api/v1/orders/{order}/shipments", s.fulfilment.http_ship),
        Route("POST", "/api/v1/shipments/{shipment}/delivered", s.fulfilment.http_delivered),
        Route("POST", "/api/v1/orders/{order}/confirm", s.fulfilment.http_confirm),
        Route("POST", "/api/v1/refunds/{refund}/return", s.fulfilment.http_return),
        Route("GET", "/api/v1/fulfilment/orders", s.fulfilment.http_to_ship),
        Route("POST", "/api/v1/payments/webhook", s.payments.http_webhook),
        Route("GET", "/api/v1/payments/callbacks", s.payments.http_callbacks),
        Route("GET", "/api/v1/payments/refunds", s.payments.http_refunds),
        Route("GET", "/api/v1/sales/{sale}/funnel", s.funnel.sale_funnel),
        Route("GET", "/api/v1/coupons/{drop}/funnel", s.funnel.drop_funnel),
        # lotteries
        Route("POST", "/api/v1/rooms/{room}/lotteries", s.lotteries.http_start),
        Route("GET", "/api/v1/rooms/{room}/lotteries", s.lotteries.http_room),
        Route("GET", "/api/v1/rooms/{room}/lotteries/mine", s.lotteries.http_mine),
        Route("GET", "/api/v1/lotteries/{id}", s.lotteries.http_get),
        # coupons
        Route("POST", "/api/v1/rooms/{room}/coupons", s.coupons.http_drop),
        Route("GET", "/api/v1/rooms/{room}/coupons", s.coupons.http_room),
        Route("GET", "/api/v1/coupons/{drop}", s.coupons.http_state),
        Route("POST", "/api/v1/coupons/{drop}/claim", s.coupons.http_claim),
        Route("GET", "/api/v1/users/{user}/coupons", s.coupons.http_user),
        # red packets
        Route("POST", "/api/v1/rooms/{room}/redpackets", s.redpackets.http_drop),
        Route("GET", "/api/v1/rooms/{room}/redpackets", s.redpackets.http_room),
        Route("POST", "/api/v1/redpackets/{id}/grab", s.redpackets.http_grab),
        Route("GET", "/api/v1/redpackets/{id}", s.redpackets.http_get),
        # wallets, gifts and their leaderboards
        Route("POST", "/api/v1/wallets/{user}/topup", s.wallets.topup),
        Route("GET", "/api/v1/wallets/{user}", s.wallets.balance),
        Route("GET", "/api/v1/wallets/{user}/ledger", s.wallets.ledger),
        Route("GET", "/api/v1/gifts", s.gifts.get_catalogue),
        Route("GET", "/api/v1/rooms/{room}/leaderboard", s.gifts.room_board),
        Route("GET", "/api/v1/hosts/{host}/leaderboard", s.gifts.host_board),
        Route("GET", "/api/v1/leaderboards/hosts", s.gifts.hosts_board),
        # points
        Route("GET", "/api/v1/points/{user}", s.points.balance),
        Route("GET", "/api/v1/points/{user}/ledger", s.points.ledger),
        Route("POST", "/api/v1/points/{user}/redeem", s.points.redeem),
        # after-sales: refunds, order history, tickets
        Route("POST", "/api/v1/orders/{order}/refunds", s.aftersales.post_refund),
        Route("GET", "/api/v1/orders/{order}/refunds", s.aftersales.order_refunds),
        Route("GET", "/api/v1/orders/{order}/history", s.aftersales.order_history),
        Route("GET", "/api/v1/refunds", s.aftersales.list_refunds),
        Route("POST", "/api/v1/refunds/{refund}/approve", s.aftersales.approve),
        Route("POST", "/api/v1/refunds/{refund}/reject", s.aftersales.reject),
        Route("POST", "/api/v1/tickets", s.tickets.post_ticket),
        Route("GET", "/api/v1/tickets", s.tickets.list_tickets),
        Route("GET", "/api/v1/tickets/{ticket}", s.tickets.get_ticket),
        Route("POST", "/api/v1/tickets/{ticket}/status", s.tickets.move_ticket),
        # fans and profiles
        Route("POST", "/api/v1/hosts/{host}/follow", s.fanclub.follow),
        Route("DELETE", "/api/v1/hosts/{host}/follow", s.fanclub.follow),
        Route("POST", "/api/v1/hosts/{host}/fanclub", s.fanclub.club),
        Route("DELETE", "/api/v1/hosts/{host}/fanclub", s.fanclub.club),
        Route("GET", "/api/v1/hosts/{host}/fans", s.fanclub.fans_board),
        Route("GET", "/api/v1/me/fanclubs", s.fanclub.mine),
        # the show report (the host console's end card)
        Route("GET", "/api/v1/rooms/{room}/report", s.reports.http_report),
        # host earnings: the statement (JSON or CSV), ops' gift reversal
        Route("GET", "/api/v1/hosts/{host}/earnings", s.earnings.http_statement),
        Route("POST", "/api/v1/ops/gifts/{event}/reversal", s.earnings.http_reverse),
        # follower reach: the notification inbox, hosts' schedules and subscriptions
        Route("GET", "/api/v1/me/notifications", s.reach.http_inbox),
        Route("POST", "/api/v1/me/notifications/read", s.reach.http_read),
        Route("POST", "/api/v1/hosts/{host}/schedule", s.reach.http_schedule_create),
        Route("GET", "/api/v1/hosts/{host}/schedule", s.reach.http_schedule_list),
        Route("GET", "/api/v1/schedules/{schedule}", s.reach.http_schedule_get),
        Route("DELETE", "/api/v1/schedules/{schedule}", s.reach.http_schedule_cancel),
        Route("POST", "/api/v1/schedules/{schedule}/subscribe", s.reach.http_subscribe),
        Route("DELETE", "/api/v1/schedules/{schedule}/subscribe", s.reach.http_subscribe),
        Route("GET", "/api/v1/users/{user}/profile", s.profiles.profile),
        Route("GET", "/api/v1/me/profile", s.profiles.my_profile),
        Route("GET", "/api/v1/me/data", s.profiles.my_data),
        Route("DELETE", "/api/v1/me/data", s.profiles.my_data),
        # growth and referrals
        Route("POST", "/api/v1/growth/acquire", s.growth.post_acquire),
        Route("GET", "/api/v1/growth/daily", s.growth.daily),
        Route("GET", "/api/v1/growth/retention", s.growth.retention),
        Route("GET", "/api/v1/growth/funnel", s.growth.funnel),
        Route("GET", "/api/v1/growth/users/{user}", s.growth.user),
        Route("POST", "/api/v1/invites", s.referrals.invite),
        Route("GET", "/api/v1/referrals/{user}", s.referrals.status),
        # segments (ops)
        Route("POST", "/api/v1/segments", s.segments.put),
        Route("GET", "/api/v1/segments", s.segments.listing),
        Route("POST", "/api/v1/segments/preview", s.segments.preview),
        Route("GET", "/api/v1/segments/{segment}", s.segments.get),
        Route("PUT", "/api/v1/segments/{segment}", s.segments.put),
        Route("GET", "/api/v1/segments/{segment}/preview", s.segments.preview),
        Route("POST", "/api/v1/segments/{segment}/coupons", s.segments.coupon),
        Route("POST", "/api/v1/segments/{segment}/push", s.segments.push_notice),
        Route("GET", "/api/v1/segments/{segment}/targets", s.segments.get_targets),
        # experiments
        Route("POST", "/api/v1/experiments", s.experiments.create),
        Route("GET", "/api/v1/experiments", s.experiments.list_all),
        Route("GET", "/api/v1/experiments/{id}", s.experiments.get_one),
        Route("POST", "/api/v1/experiments/{id}/start", s.experiments.start_one),
        Route("POST", "/api/v1/experiments/{id}/stop", s.experiments.stop_one),
        Route("GET", "/api/v1/experiments/{id}/results", s.experiments.get_results),
        Route("GET", "/api/v1/me/flags", s.experiments.my_flags),
        # feed
        Route("GET", "/api/v1/feed", s.feed.get_feed),
        Route("GET", "/api/v1/feed/rooms", s.feed.list_rooms),
        Route("PUT", "/api/v1/rooms/{room}/category", s.feed.put_category),
        # ops dashboard
        Route("GET", "/api/v1/ops/overview", s.ops.get_overview),
        Route("GET", "/api/v1/ops/series", s.ops.get_series),
        Route("GET", "/api/v1/ops/alerts", s.ops.get_alerts),
        Route("GET", "/api/v1/ops/inventory/{sale}", s.ops.get_inventory),
        # pages and the API document
        Route("GET", "/", s.pages.index),
        Route("GET", "/api/v1/openapi.json", s.openapi.openapi_json),
        Route("GET", "/api/v1/docs", s.openapi.docs),
    ]


def static_routes() -> list[StaticRoute]:
    """Directories served as files: the demo pages (``gateway.pages``)."""
    return [StaticRoute("/static/", STATIC_DIR, "static")]


def ws_commands(s: Services) -> dict[str, CommandHandler]:
    return {
        "ping": s.comments.ping,
        "comment": s.comments.comment,
        "like": s.likes.like,
        "buy": s.sales.buy,
        "sale.start": s.sales.host_start,
        "room.live": s.rooms.ws_live,
        "room.end": s.rooms.ws_end,
        "pin": s.rooms.ws_pin,
        "bag.set": s.bags.ws_set,
        "bag.add": s.bags.ws_add,
        "bag.remove": s.bags.ws_remove,
        "bag.order": s.bags.ws_order,
        "bag.explain": s.bags.ws_explain,
        "lottery.start": s.lotteries.ws_start,
        "lottery.enter": s.lotteries.ws_enter,
        "coupon.drop": s.coupons.ws_drop,
        "coupon.claim": s.coupons.ws_claim,
        "gift": s.gifts.gift,
        "redpacket.grab": s.redpackets.ws_grab,
        "cart.get": s.carts.ws_get,
        "cart.add": s.carts.ws_add,
        "cart.set": s.carts.ws_set,
        "cart.remove": s.carts.ws_remove,
        "cart.clear": s.carts.ws_clear,
        "cart.checkout": s.carts.ws_checkout,
    }
