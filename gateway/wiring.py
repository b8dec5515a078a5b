"""Every capability of a gateway node, built once, in one visible order.

:func:`build` is the only place that constructs capability objects: each gets the engines
and the other capabilities it needs as constructor arguments, so the order below is the
dependency order and a reader sees it top to bottom. What every capability may hook into
(comments, gifts, welcome, start and stop) are the typed lists of :class:`~gateway.hooks.Hooks`.
``gateway.routes`` maps every HTTP route and WebSocket command to a method of these objects.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from livecommerce.badges import Badges
from livecommerce.badges_redis import RedisBadges
from livecommerce.bag_redis import RedisBags
from livecommerce.catalog_redis import RedisCatalog
from livecommerce.catalog_sync import Catalogue
from livecommerce.checkout import Checkout
from livecommerce.coupons_redis import CouponsRedis
from livecommerce.experiments_redis import ExperimentsRedis
from livecommerce.fanclub_redis import FanclubRedis
from livecommerce.feed_redis import FeedRedis
from livecommerce.fulfilment_redis import FulfilmentRedis
from livecommerce.funnel_redis import FunnelRedis
from livecommerce.leaderboard_redis import RedisLeaderboards
from livecommerce.likes_redis import RedisLikes
from livecommerce.log import Log
from livecommerce.log_open import open_log
from livecommerce.lottery_redis import RedisLotteries
from livecommerce.moderation_redis import RedisModeration
from livecommerce.ops_redis import OpsRedis
from livecommerce.payments_http import HttpPaymentProvider
from livecommerce.payments_redis import PaymentsRedis
from livecommerce.pins_redis import RedisPins
from livecommerce.points_redis import PointsRedis
from livecommerce.profiles_redis import ErasureRedis
from livecommerce.reach_redis import RedisReach
from livecommerce.redpackets_redis import RedisRedPackets
from livecommerce.referrals_redis import ReferralsRedis
from livecommerce.refunds_redis import RefundsRedis
from livecommerce.room_snapshot import LOCAL_EVENTS, SNAPSHOT_EVENTS
from livecommerce.room_snapshot_redis import RedisRoomSnapshots
from livecommerce.rooms_redis import RedisRooms
from livecommerce.segments_redis import SegmentsRedis
from livecommerce.showreport_redis import ShowReportRedis
from livecommerce.store_sql import SqlStore
from livecommerce.wallet_redis import RedisWallet

from .bag import RoomBags
from .capabilities import CAPABILITIES
from .cart import Carts
from .catalog import CatalogService
from .comments import Comments
from .commerce import SALE_EVENTS, FlashSales, Orders
from .core import Gateway
from .coupons import Coupons
from .earnings import Earnings
from .experiments import Experiments
from .fanclub import Fanclub
from .feed import Feed
from .fulfilment import Fulfilment
from .funnel import Funnel
from .gifts import Gifts
from .growth import Growth
from .hooks import RoomCommentHook
from .http import Health
from .likes import Likes
from .lottery import LotteryService
from .moderation import Moderation
from .openapi import OpenApi
from .ops import Ops
from .pages import Pages
from .payments import Payments
from .points import Points
from .profiles import Profiles
from .reach import Reach
from .redpackets import RedPackets
from .referrals import Referrals
from .refunds import AfterSales
from .rooms import RoomGate, RoomsService
from .segments import Segments
from .showreport import ShowReports
from .snapshots import RoomSnapshots
from .tickets import Tickets
from .wallet import Outbox, Wallets


@dataclass
class Services:
    """The capability objects of one node (typed: no string-keyed lookups)."""

    # engines
    store: SqlStore
    log: Log
    # money, points and after-sales
    wallet: RedisWallet
    wallet_outbox: Outbox
    wallets: Wallets
    gifts: Gifts
    redpackets: RedPackets
    earnings: Earnings
    points: Points
    aftersales: AfterSales
    tickets: Tickets
    # fans, profiles, growth
    fanclub: Fanclub
    reach: Reach
    profiles: Profiles
    growth: Growth
    referrals: Referrals
    likes: Likes
    comments: Comments
    moderation: Moderation
    room_gate: RoomGate
    lotteries: LotteryService
    coupons: Coupons
    rooms: RoomsService
    health: Health
    ops: Ops
    pages: Pages
    openapi: OpenApi
    experiments: Experiments
    feed: Feed
    segments: Segments
    # the catalogue and the rooms' product lists
    catalog: CatalogService
    bags: RoomBags
    carts: Carts
    # flash sales, orders, campaign funnels
    checkout: Checkout
    sales: FlashSales
    orders: Orders
    funnel: Funnel
    reports: ShowReports
    # the payment boundary: intents at the provider, its signed callbacks
    payments: Payments
    # fulfilment: addresses, shipments, deliveries, receipt
    fulfilment: Fulfilment


#: the node's capabilities on its aiohttp application (tests reach them through it)
SERVICES_KEY = web.AppKey("services", Services)


def build(gw: Gateway) -> Services:
    """Construct the node's capabilities in dependency order and register their hooks."""

    # engines, opened once and passed to whoever needs them; closed after every flush (the
    # flushes are inserted at the front of the stop hooks)
    store = SqlStore(gw.s.database_url)
    durable = open_log(gw.s, gw.redis)
    gw.hooks.stop.append(durable.close)
    gw.hooks.stop.append(store.close)

    # has this room's show ended? asked by comments, buys, coupons and lotteries; a room this
    # node serves is answered from its snapshot (below), others are read at most once a second
    room_store = RedisRooms(gw.redis, gw.keys)
    gate = RoomGate(room_store)
    gw.hub.observe(("room.ended", "room.live"), gate.observe)

    likes = Likes(gw, RedisLikes(gw.redis, gw.keys, retention_s=gw.s.room_retention_s))
    gw.hub.on_second.append(likes.on_second)

    # the node's snapshot of each room it serves: a joiner's welcome from memory (seq, show,
    # pin, likes, gift board, lotteries, coupon drops), kept current by the room's events
    lottery_store = RedisLotteries(gw.redis, gw.keys)
    coupon_store = CouponsRedis(gw.redis, gw.keys)
    link = getattr(gw.broker, "connected", None)  # the Redis broker's pub/sub link state
    packet_store = RedisRedPackets(gw.redis, gw.keys)
    views = RoomSnapshots(RedisRoomSnapshots(gw.redis, gw.keys, lottery_store, coupon_store, packet_store), gw.keys,
                          pending_likes=likes.tally.pending, hearing=link.is_set if link is not None else None)
    gw.hub.observe(SNAPSHOT_EVENTS, views.observe)
    gw.hub.observe_local(LOCAL_EVENTS, views.observe_local)
    gw.hub.on_drop.append(views.forget)
    gw.hub.on_second.append(views.on_second)
    add_resubscribe_listener = getattr(gw.broker, "add_resubscribe_listener", None)
    if add_resubscribe_listener is not None:
        add_resubscribe_listener(views.on_resubscribed)
    gw.hooks.room_seq = views.seq
    gw.hooks.welcome.append(views.welcome)
    gw.hooks.stop.append(views.stop)
    views.listeners.append(gate.serving)

    # room moderation: the node's copy of each served room's moderators, mutes, bans and chat
    # settings (read at its first welcome, kept by the room's `moderation` events) and of the
    # platform's bans (the platform inbox); the comment guard, the first welcome hook
    moderation = Moderation(gw, RedisModeration(gw.redis, gw.keys), FanclubRedis(gw.redis, gw.keys), store, gate)
    gw.hub.observe(("moderation",), moderation.observe)
    gw.hub.on_drop.append(moderation.forget)
    gw.hub.on_second.append(moderation.on_second)
    add_resubscribe_listener = getattr(gw.broker, "add_resubscribe_listener", None)
    if add_resubscribe_listener is not None:
        add_resubscribe_listener(moderation.on_resubscribed)
    gw.hooks.welcome.insert(0, moderation.welcome)  # a banned joiner costs nothing else
    gw.hooks.start.append(moderation.start)

    comments = Comments(gw, gate, Badges(RedisBadges(gw.redis, gw.keys)), gw.hooks.comment, guard=moderation.check_comment)
    gw.hooks.comment.append(moderation.on_comment)  # slow mode counts a comment that passed every check

    lotteries = LotteryService(gw, lottery_store, gate, views, coupon_store)
    views.listeners.append(lotteries.serving)  # a room listing no lottery has none open: no read
    gw.hooks.comment.append(RoomCommentHook(lotteries.on_comment, lotteries.quiet))  # keyword entries
    gw.hooks.gift.append(lotteries.on_gift)
    gw.hub.observe(("lottery.started", "lottery.ended", "room.ended"), lotteries.observe)

    coupons = Coupons(gw, coupon_store, gate, gw.hooks.tried, views)

    # flash sales and orders: the checkout (Redis stock and holds, the orders log), the node's
    # view of every sale (its local answers to late buyers), campaigns, orders
    checkout = Checkout(gw.redis, gw.keys, durable, coupons=coupons.store, sale_retention_s=gw.s.sale_retention_s,
                        room_retention_s=gw.s.room_retention_s, payment_window_s=gw.s.payment_window_s)
    checkout.room_gate = gate  # buys in an ended show answer room_ended
    gw.hooks.stop.insert(0, checkout.drain)  # the group commits in flight reach the log before it closes
    sales = FlashSales(gw, checkout, store, gw.hooks.tried)
    carts = Carts(gw, checkout.cart, sales, gate)  # carts and their checkout (cart orders pay/cancel through checkout)
    gw.hooks.start.insert(0, sales.check_schema)  # before anything reads SQL: says `livecommerce db upgrade`
    gw.hub.observe(SALE_EVENTS, sales.observe)
    # fulfilment: each order's record (shipments, receipt) beside its refund records, one slot
    refund_records = RefundsRedis(gw.redis, gw.keys)
    ship_records = FulfilmentRedis(gw.redis, gw.keys)
    fulfilment = Fulfilment(gw, ship_records, refund_records, store, durable)
    orders = Orders(gw, checkout, store, sales, fulfilment)
    payments = build_payments(gw, checkout, durable)

    rooms = RoomsService(
        gw,
        room_store,
        gate,
        RedisPins(gw.redis, gw.keys, pin_ttl_s=gw.s.room_retention_s),
        likes=likes,
        lotteries=lotteries.store,
        coupons=coupons.store,
        checkout=checkout,
        store=store,
        views=views,
    )
    rooms.sale_for_product = sales.sale_for_product  # a pin shows its live sale and the stock left
    gw.hooks.comment.append(rooms.count_comment)
    gw.hooks.welcome.append(rooms.welcome)
    gw.hub.on_second.append(rooms.tick)

    # the catalogue (products with SKUs) and each room's product list (小黄车): the lists
    # follow their products' changes; welcome reads the node's copy of each served room's list
    products = RedisCatalog(gw.redis, gw.keys)
    bags = RoomBags(gw, RedisBags(gw.redis, gw.keys), products, gate.host)
    gw.hooks.welcome.append(bags.welcome)
    gw.hub.observe(("bag.changed",), bags.observe)
    gw.hub.on_second.append(bags.on_second)
    add_resubscribe_listener = getattr(gw.broker, "add_resubscribe_listener", None)
    if add_resubscribe_listener is not None:
        add_resubscribe_listener(bags.on_resubscribed)
    catalog = CatalogService(gw, Catalogue(products, store), [bags.product_changed])

    # money: the wallet and its outbox (the gift path's too), gifts, points, after-sales
    wallet = RedisWallet(gw.redis, gw.keys)
    outbox = Outbox(durable, wallet)
    gw.hub.on_tick.append(outbox.on_tick)
    gw.hooks.stop.insert(0, outbox.flush)
    wallets = Wallets(gw, wallet, outbox, store)
    gw.hooks.welcome.append(wallets.welcome)
    gifts = Gifts(gw, wallet, outbox, RedisLeaderboards(gw.redis, gw.keys, room_ttl_s=gw.s.room_retention_s), gate,
                  gw.hooks.gift)
    gw.hub.on_tick.append(gifts.on_tick)
    gw.hub.on_second.append(gifts.on_second)
    gw.hub.observe(("gift",), gifts.observe)
    gw.hooks.stop.insert(0, gifts.stop)
    # red packets: the drop debits and each grab credits through the same wallet outbox; the
    # keeper worker ends, refunds and announces them; a comment holding a password grabs
    redpackets = RedPackets(gw, packet_store, outbox, gate, FanclubRedis(gw.redis, gw.keys), views)
    views.listeners.append(redpackets.serving)
    gw.hooks.comment.append(RoomCommentHook(redpackets.on_comment, redpackets.quiet))  # password packets
    gw.hub.observe(("redpacket.dropped", "redpacket.ended"), redpackets.observe)
    points = Points(gw, PointsRedis(gw.redis, gw.keys), durable, store)
    gw.hooks.comment.append(points.on_comment)
    gw.hooks.welcome.append(points.on_welcome)
    gw.hub.on_second.append(points.on_second)
    gw.hooks.stop.insert(0, points.stop)
    aftersales = AfterSales(gw, refund_records, store, durable, gifts.host_of, ship_records)
    # host earnings: the statement, and ops' gift reversal (the sender's refund and the
    # gift.reversed event in one wallet script, appended through the outbox)
    earnings = Earnings(gw, store, wallet, outbox)
    tickets = Tickets(gw, store, durable)

    # fans and profiles (the feed reads profiles)
    fanclub = Fanclub(gw, FanclubRedis(gw.redis, gw.keys, ttl_s=gw.s.user_cache_ttl_s), store, durable)
    profiles = Profiles(gw, ErasureRedis(gw.redis, gw.keys), store, durable, coupons.store, ship_records)
    # follower reach: a show going live appends `host.live` (the reach worker fans it out to the
    # followers' inboxes); the welcome's unread count; schedules, subscriptions, the feed's upcoming
    reach = Reach(gw, store, RedisReach(gw.redis, gw.keys, ttl_s=gw.s.user_cache_ttl_s), durable)
    gw.hooks.live.append(reach.on_live)
    gw.hooks.welcome.append(reach.welcome)  # the unread count follows the welcome, batched
    gw.hooks.stop.append(reach.stop)

    # ops plane: health, the dashboard's sampler and its alerts, the pages, the API document
    ops_redis = OpsRedis(gw.redis, gw.keys)
    health = Health(gw, ops_redis)
    ops = Ops(gw, ops_redis, gw.presence, store, checkout)
    gw.hooks.comment.append(ops.on_comment)
    gw.hooks.gift.append(ops.on_gift)
    gw.hooks.response.append(ops.on_response)
    gw.hooks.start.append(ops.start)
    gw.hooks.stop.insert(0, ops.stop)  # the sampler stops before the engines it reads
    pages = Pages(gw.s.payment_provider_url)
    gw.hooks.response.append(pages.security_headers)
    openapi = OpenApi(CAPABILITIES)

    # growth: experiment flags (the feed's ranker, referrals' points), the feed, segments
    experiments = Experiments(gw, ExperimentsRedis(gw.redis, gw.keys), durable, store)
    gw.hub.on_second.append(experiments.on_second)
    gw.hooks.welcome.append(experiments.welcome)
    gw.hooks.start.append(experiments.on_second)
    gw.hooks.stop.insert(0, experiments.stop)
    feed = Feed(gw, FeedRedis(gw.redis, gw.keys, ttl_s=gw.s.room_retention_s), RedisPins(gw.redis, gw.keys), experiments,
                profiles, upcoming=reach.upcoming)
    gw.hub.observe(("room.live", "room.ended", "product.pinned"), feed.observe)
    gw.hub.on_second.append(feed.on_second)
    gw.hooks.response.append(feed.on_response)
    gw.hooks.stop.insert(0, feed.stop)
    segments = Segments(gw, SegmentsRedis(gw.redis, gw.keys), gw.presence, store, durable, coupons.store)
    referrals_redis = ReferralsRedis(gw.redis, gw.keys)
    growth = Growth(gw, referrals_redis, store, durable)
    gw.hooks.welcome.append(growth.welcome)
    gw.hooks.stop.insert(0, growth.stop)
    referrals = Referrals(gw, referrals_redis, store, experiments)

    # campaign funnels: who was there, saw and tried each sale and coupon drop (buy and
    # coupon.claim call the tried hooks; the HTTP buy and claim count from the response)
    funnel = Funnel(gw, FunnelRedis(gw.redis, gw.keys), checkout, store, coupons.store)
    gw.hub.observe(("sale.started", "sale.ended", "coupon.dropped", "product.pinned"), funnel.observe)
    gw.hooks.welcome.append(funnel.welcome)
    gw.hub.on_second.append(funnel.on_second)
    gw.hooks.tried.append(funnel.tried)
    gw.hooks.response.append(funnel.on_response)
    gw.hooks.stop.insert(0, funnel.flush)
    # the show report: each show's distinct viewers and follower counts (the rest is read
    # from the room's meta and SQL when asked)
    reports = ShowReports(gw, ShowReportRedis(gw.redis, gw.keys, ttl_s=gw.s.room_retention_s), store)
    ops.show_viewers = reports.counters.viewer_counts  # the ops funnel starts from the show's distinct viewers
    gw.hooks.welcome.append(reports.welcome)
    gw.hub.observe(("room.live",), reports.observe)
    gw.hub.on_second.append(reports.on_second)
    gw.hooks.live.append(reports.on_live)
    gw.hooks.ended.append(reports.on_ended)
    gw.hooks.stop.insert(0, reports.flush)

    return Services(payments=payments, fulfilment=fulfilment, catalog=catalog, bags=bags, carts=carts, checkout=checkout, sales=sales, orders=orders, funnel=funnel, reports=reports, likes=likes, comments=comments, moderation=moderation, room_gate=gate, lotteries=lotteries, coupons=coupons, rooms=rooms,
                    health=health, ops=ops, pages=pages, openapi=openapi, experiments=experiments, feed=feed, segments=segments,
                    store=store, log=durable, wallet=wallet, wallet_outbox=outbox, wallets=wallets, gifts=gifts, redpackets=redpackets, earnings=earnings, points=points,
                    aftersales=aftersales, tickets=tickets, fanclub=fanclub, reach=reach, profiles=profiles, growth=growth,
                    referrals=referrals)


def build_payments(gw: Gateway, checkout: Checkout, durable: Log) -> Payments:
    """The payment boundary: the provider's HTTP adapter when ``LC_PAYMENT_PROVIDER_URL`` is
    set (its webhook secret checked: ConfigError), else none (intents answer 403 payments_disabled)."""
    provider: HttpPaymentProvider | None = None
    if gw.s.payment_provider_url:
        gw.s.check_payments()
        provider = HttpPaymentProvider(gw.s.payment_provider_url)
        gw.hooks.stop.append(provider.close)
    payments = Payments(gw, checkout, PaymentsRedis(gw.redis, gw.keys), durable, provider)
    gw.hooks.welcome.append(payments.welcome)  # how the viewer page pays
    return payments
