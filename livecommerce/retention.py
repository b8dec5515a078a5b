"""Retention rules: how long each Redis key family, the log and SQLite's WAL keep data.

Nothing may grow forever: every key that is written per user, sale, room or event either
expires (a TTL refreshed on write, or one set when its sale, room or refund is over) or is
removed by a clean-up, and the durable log is trimmed once every consumer group has passed.
:data:`FAMILIES` is the table (``docs/retention.md`` prints it; ``scripts/soak.py`` sorts
the keys it samples by it). No I/O here: the adapters apply the rules.

The log's trim point (:func:`trim_point`) is pure too: from what each consumer group of a
stream has read and still holds, and the clock, the id below which entries may go.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# defaults of the LC_* settings (livecommerce.config.Settings), for adapters built without them
SALE_RETENTION_S = 30 * 86400  # settled sale's keys; longer than the 15-day refund window
ROOM_RETENTION_S = 7 * 86400  # a room's counters and caches after their last write
USER_CACHE_TTL_S = 30 * 86400  # per-user caches, refreshed on write
LOG_RETAIN_S = 86400  # entries every group has passed stay this long
LOG_MAX_AGE_S = 30 * 86400  # hard cap, whatever the groups

Rule = str  # "ttl", "settled", "capped", "kept", "cleanup": see Family.rule


@dataclass(frozen=True, slots=True)
class Family:
    """One key family: ``pattern`` matches the key name after ``<prefix>:``.

    ``rule``: ``ttl`` (an expiry refreshed on write), ``settled`` (an expiry set when the
    sale / refund / lottery is over), ``capped`` (trimmed to a size or age), ``cleanup``
    (entries removed by their own life cycle), ``kept`` (source of truth, bounded by what it
    describes: hosts, products, wallets' 64 shards...).
    """

    name: str
    pattern: str
    holds: str
    rule: Rule
    lifetime: str
    where: str


FAMILIES: tuple[Family, ...] = (
    # rooms
    Family("room meta", r"\{room:[^}]+\}:meta$", "the room's definition, state and last show summary", "kept",
           "for good (source of truth: rooms have no SQL home; one small hash per room)", "rooms_redis.py"),
    Family("room seq", r"\{room:[^}]+\}:seq$", "the room's event counter", "ttl",
           "LC_HISTORY_TTL_S after the room's last event (then seeded from the clock again)", "broker_publish.lua"),
    Family("room history", r"\{room:[^}]+\}:hist$", "recent room events (since= recovery)", "capped",
           "LC_HISTORY_SIZE entries, LC_HISTORY_TTL_S after the last event", "broker_publish.lua"),
    Family("room online", r"\{room:[^}]+\}:online$", "node -> viewers online", "ttl", "60 s, refreshed every second", "gateway/hub.py"),
    Family("room likes", r"\{room:[^}]+\}:likes$", "the room's like counter", "ttl",
           "LC_ROOM_RETENTION_S after the last like", "gateway/likes.py"),
    Family("room viewers", r"\{room:[^}]+\}:viewers$", "the current show's distinct viewers (HyperLogLog, the show report)",
           "ttl", "LC_ROOM_RETENTION_S after the last join (emptied when a show starts)", "showreport_redis.py"),
    Family("room pin", r"\{room:[^}]+\}:pin$", "the pinned product", "ttl", "LC_ROOM_RETENTION_S after the pin", "pins_redis.py"),
    Family("room bag", r"\{room:[^}]+\}:bag$", "the room's product list and its version", "kept",
           "for good (one list of at most 100 items per room, like the room's meta: the next show starts with it)",
           "bag_redis.py"),
    Family("room board", r"\{room:[^}]+\}:lb$", "the room's gifters (user ids)", "ttl",
           "LC_ROOM_RETENTION_S after the last gift", "leaderboard_redis.py"),
    Family("room payers", r"\{room:[^}]+\}:payers$", "users who paid in the room (hot-room ranking)", "ttl",
           "LC_ROOM_RETENTION_S after the last payment", "checkout.py"),
    Family("room feed", r"\{room:[^}]+\}:feed$", "category, GMV counters for the feed", "ttl",
           "LC_ROOM_RETENTION_S after the last write or go-live", "feed_redis.py"),
    Family("room coupons", r"\{room:[^}]+\}:coupons$", "the room's coupon drops", "ttl", "30 days after its last drop expires",
           "coupons_redis.py"),
    Family("room campaigns", r"\{room:[^}]+\}:campaigns$", "running campaigns (funnels)", "ttl", "30 days after the last start",
           "funnel_redis.py"),
    Family("room moderation", r"\{room:[^}]+\}:mod$", "moderators, mutes, kicks, bans (user ids), chat settings", "kept",
           "for good while it holds a moderator, a setting or a for-good ban; else until its last mute, kick or ban "
           "ends (ended ones pruned on each change)", "moderation_apply.lua"),
    Family("room lotteries", r"\{room:[^}]+\}:lotteries$", "open lotteries", "cleanup", "each removed when announced",
           "lottery_redis.py"),
    # sales
    Family("sale state", r"\{sale:[^}]+\}:(meta|stock|buyers|req|orders|deadlines|counts|refunds)$",
           "definition, stock, holds with user ids, idempotency, counters", "settled",
           "LC_SALE_RETENTION_S after the sale is settled (ended, no hold unpaid)", "flash_sale_settle.lua via orders worker"),
    Family("sale claims", r"\{sale:[^}]+\}:(ann:\w+|stockpub)$", "announcement claims, stock broadcast throttle", "ttl",
           "7 days / LC_STOCK_BROADCAST_MS; LC_SALE_RETENTION_S once settled", "checkout.py, gateway/commerce.py"),
    Family("sale funnel", r"\{(sale|coupon):[^}]+\}:f:\w+$", "HyperLogLogs of viewers, saw, tried", "ttl",
           "30 days after the last add", "funnel_redis.py"),
    Family("sale schedule", r"(sched:(start|end)|sales:active|orders:cancelling)$",
           "sales to start, end, time out; cancels not yet logged", "cleanup",
           "each sale removed when started / ended / settled, each cancel once its event is logged", "orders worker"),
    # orders, coupons, lotteries
    Family("order refunds", r"\{order:[^}]+\}:refunds$", "the order's refund records (user id)", "settled",
           "LC_SALE_RETENTION_S after its last refund is done; kept while one is open", "refunds_record.lua"),
    Family("order coupon", r"\{order:[^}]+\}:coupon$", "coupon locked for an order", "ttl", "30 days", "coupons_redis.py"),
    Family("coupon drop", r"\{coupon:[^}]+\}:(meta|left|owners|members)$", "drop, owners (user ids)", "ttl",
           "30 days after the drop expires", "coupons_*.lua"),
    Family("lottery", r"\{lottery:[^}]+\}:\w+$", "definition, entrants (user ids), record", "settled",
           "30 days after the draw is announced", "lottery_redis.py"),
    Family("reach lease", r"reach:sweep$", "which worker runs the reminder sweep", "ttl", "the lease (30 s)",
           "reach_redis.py"),
    Family("lottery due", r"lottery:due$", "lotteries to draw", "cleanup", "each removed when announced", "lottery_redis.py"),
    # users
    Family("user nodes", r"\{user:[^}]+\}:nodes$", "node -> open connections", "ttl", "24 h after the last connect", "notify.py"),
    Family("user points", r"\{user:[^}]+\}:points$", "cached balance and level (SQL holds the truth)", "ttl",
           "LC_USER_CACHE_TTL_S after the last points change", "workers/points.py"),
    Family("user comments", r"\{user:[^}]+\}:cmt:\d+$", "today's comment points counter", "ttl", "2 days", "gateway/points.py"),
    Family("user coupons", r"\{user:[^}]+\}:coupons$", "the user's coupon ids", "ttl",
           "30 days after the latest drop claimed expires", "coupons_redis.py"),
    Family("user fan version", r"\{user:[^}]+\}:fanv$", "version of the next follow change", "ttl",
           "LC_USER_CACHE_TTL_S after the last change (seeded from the clock)", "fanclub_redis.py"),
    Family("user unread", r"\{user:[^}]+\}:unread$", "unread notification count (cache of SQL)", "ttl",
           "LC_USER_CACHE_TTL_S after the last change", "reach_redis.py"),
    Family("user invite", r"\{user:[^}]+\}:(invite|acq)$", "the user's invite code, first acquisition", "kept",
           "for good (source of truth of the referral; erasure deletes it)", "referrals_redis.py"),
    Family("invite owner", r"\{invite:[^}]+\}:owner$", "who owns a code", "kept", "for good (codes are never reused)",
           "referrals_redis.py"),
    # money
    Family("wallet", r"\{wallet:\d+\}:(bal|out|topups|erasing|erased)$",
           "balances, outbox, top-up idempotency (64 shards)", "kept",
           "for good: 64 hashes; the outbox drains; top-up records grow per top-up (see docs)", "wallet_*.lua"),
    Family("gift combo", r"\{wallet:\d+\}:combo:.+$", "running gift combo", "ttl", "the combo window", "wallet_gift.lua"),
    Family("gift request", r"\{wallet:\d+\}:greq:.+$", "a gift request id's first outcome", "ttl", "24 h",
           "wallet_gift_batch.lua"),
    Family("pay key", r"paykey:.+$", "payment Idempotency-Key answers", "ttl", "24 h", "gateway/commerce.py"),
    # per host, product, global
    Family("fan cache", r"\{fan:[^}]+\}:(badges|board|followers)$", "members' fan levels, followers (cache of SQL)", "kept",
           "per host, bounded by its members and followers; rebuilt by `profiles rebuild`", "fanclub_redis.py"),
    Family("host board", r"(\{host:[^}]+\}:lb|lb:hosts)$", "gift boards per host, hosts by gifts", "kept",
           "per host, bounded by its gifters", "leaderboard_redis.py"),
    Family("product", r"\{product:[^}]+\}:(meta|stock|held|sold|stocked|off|rooms)$",
           "the catalogue: definition, each SKU's units, archived SKUs, rooms listing it", "kept",
           "for good (products are archived, never deleted; bounded by the catalogue)", "catalog_redis.py"),
    Family("product moves", r"\{product:[^}]+\}:moves$", "stock moves SQL has not recorded yet (owner ids)", "cleanup",
           "each move removed once SQL has it (catalog_sync.py; `catalog reconcile --repair` for the rest)",
           "catalog_sync.py"),
    Family("product holds", r"\{product:[^}]+\}:(holds|deadlines|settled)$", "holds of SKU units (user ids)",
           "cleanup", "a hold leaves the deadlines when paid or released; settled holds removed 30 days later "
           "by `catalog reconcile --repair`", "catalog_redis.py"),
    Family("catalog index", r"catalog:products$", "every product id", "kept", "for good (bounded by the catalogue)",
           "catalog_redis.py"),
    Family("push targets", r"\{push:[^}]+\}:users$", "users a segment push reached", "ttl", "30 days", "gateway/segments.py"),
    Family("platform bans", r"mod:platform$", "users banned from the platform", "kept",
           "for good while a for-good ban holds; else until the last ban ends", "moderation_apply.lua"),
    Family("ops", r"ops:.+$", "node totals, recent rooms, commerce snapshot", "ttl",
           "1 h / 24 h window / 60 s", "gateway/ops.py"),
    Family("feed index", r"\{feed\}:live$", "live rooms", "cleanup", "rooms removed when they end", "feed_redis.py"),
    Family("experiments", r"\{exp\}:(defs|v)$", "experiment definitions", "kept", "for good (a few definitions)",
           "experiments_redis.py"),
    Family("idempotency", r"\{user:[^}]+\}:idem:.+$", "HTTP Idempotency-Key answers", "ttl", "24 h (IDEMPOTENCY_TTL_S)",
           "idempotency_redis.py"),
    # the durable log
    Family("log stream", r"\{log:[^}]+\}$", "durable log partitions (events with user ids)", "capped",
           "trimmed once every group passed and LC_LOG_RETAIN_S old; LC_LOG_MAX_AGE_S hard cap", "workers/retention.py"),
)

_COMPILED = tuple((f, re.compile(f.pattern)) for f in FAMILIES)


def family_of(key: str, prefix: str) -> str:
    """The family name of ``key`` (``"other"`` when no family matches)."""
    name = key[len(prefix) + 1 :] if key.startswith(prefix + ":") else key
    for f, rx in _COMPILED:
        if rx.search(name):
            return f.name
    return "other"


# ------------------------------------------------------------------ the log's trim point
@dataclass(frozen=True, slots=True)
class GroupPosition:
    """What one consumer group of a stream has read (``last_delivered``) and the oldest
    entry it still holds unacknowledged (``oldest_pending``, None when nothing is)."""

    name: str
    last_delivered: str
    oldest_pending: str | None


def parse_id(sid: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` as a tuple (``"0"`` is ``(0, 0)``)."""
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)


def trim_point(groups: Iterable[GroupPosition], *, now_ms: int, retain_ms: int, max_age_ms: int = 0) -> tuple[int, int]:
    """The id (as ``(ms, seq)``) below which a stream's entries may be removed (XTRIM MINID).

    An entry may go when every group has read past it and none still holds it pending, and
    it is older than ``retain_ms`` (kept for new groups and for replays); with
    ``max_age_ms``, entries older than that go whatever the groups (a group that lagged so
    long loses them). A stream with no group keeps everything younger than ``max_age_ms``.
    """
    gs = list(groups)
    floor = (now_ms - retain_ms, 0) if gs else (0, 0)
    for g in gs:
        if g.oldest_pending is not None:
            floor = min(floor, parse_id(g.oldest_pending))
        ms, seq = parse_id(g.last_delivered)
        floor = min(floor, (ms, seq + 1))
    if max_age_ms > 0:
        floor = max(floor, (now_ms - max_age_ms, 0))
    return max(floor, (0, 0))
