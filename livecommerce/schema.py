"""Every SQL table, on one :data:`metadata`: what the ``*_sql`` adapters query and what
:mod:`livecommerce.migrations` creates.

Importing this module creates nothing; :func:`livecommerce.migrations.upgrade` (``livecommerce
db upgrade``) does, step by step. Each section says which migration step made its tables.
A table's definition here is its *current* shape; a step that created an older shape keeps a
frozen copy of it in :mod:`livecommerce.migrations` (the ``refunds`` of step 1).

This module imports nothing of the adapters, so ``store_sql``, ``migrations`` and the
capability ``*_sql`` modules all import it and none of them imports another to reach a table.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from .growth import ORGANIC

metadata = MetaData()

# An auto-increment 64-bit key: SQLite only auto-increments INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
ID = 128  # length of ids: ours are at most 64, external ones (payment ids) may be longer

# ---------- the migrations' own record

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("description", String(200), nullable=False),
    Column("applied_ms", BigInteger, nullable=False),
)

# ---------- step 1: rooms, products, sales, orders, refunds, ledgers, claims, coupons, lotteries

rooms = Table(
    "rooms",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("host_id", String(ID), nullable=False, index=True),
    Column("title", String(200), nullable=False, default=""),
    Column("state", String(16), nullable=False, default="created"),  # created | live | ended
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

products = Table(
    "products",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("price", BigInteger, nullable=False),  # list price, cents
    Column("room_id", String(ID), nullable=True, index=True),
    Column("data", JSON, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

sales = Table(
    "sales",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("room_id", String(ID), nullable=False, index=True),
    Column("product_id", String(ID), nullable=False, index=True),
    Column("product_name", String(200), nullable=True),
    Column("price", BigInteger, nullable=False),
    Column("stock", Integer, nullable=False),  # initial stock
    Column("per_user_limit", Integer, nullable=False),
    Column("starts_ms", BigInteger, nullable=False),
    Column("ends_ms", BigInteger, nullable=False),
    Column("payment_window_s", Integer, nullable=False),
    Column("restock_on_refund", Boolean, nullable=False, default=False),
    Column("state", String(16), nullable=False),  # flash_sale.SaleState
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

orders = Table(
    "orders",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("sale_id", String(ID), nullable=False),
    Column("room_id", String(ID), nullable=False),
    Column("user_id", String(ID), nullable=False),
    Column("qty", Integer, nullable=False),
    Column("unit_price", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),  # qty * unit_price - discount
    Column("discount", BigInteger, nullable=False, default=0),
    Column("coupon_id", String(ID), nullable=True),
    Column("state", String(24), nullable=False),  # orders.OrderState
    Column("pay_by_ms", BigInteger, nullable=False),
    Column("refunded_qty", Integer, nullable=False, default=0),
    Column("refunded_amount", BigInteger, nullable=False, default=0),
    Column("request_id", String(ID), nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Index("ix_orders_user", "user_id", "created_ms"),
    Index("ix_orders_sale_state", "sale_id", "state"),
    Index("ix_orders_room", "room_id", "created_ms"),
    Index("ix_orders_state_pay_by", "state", "pay_by_ms"),
)

order_events = Table(
    "order_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(ID), nullable=False, unique=True),  # the log event id
    Column("order_id", String(ID), ForeignKey("orders.id"), nullable=False, index=True),
    Column("from_state", String(24), nullable=True),
    Column("to_state", String(24), nullable=False),
    Column("refund_qty", Integer, nullable=False, default=0),
    Column("refund_amount", BigInteger, nullable=False, default=0),
    Column("reason", Text, nullable=True),
    Column("ts_ms", BigInteger, nullable=False),
)

refunds = Table(  # version 1 made the request's columns; version 2 added the rest
    "refunds",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("order_id", String(ID), ForeignKey("orders.id"), nullable=False, index=True),
    Column("user_id", String(ID), nullable=False, index=True),
    Column("qty", Integer, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("reason", Text, nullable=True),  # the reason code (refunds.REASONS)
    Column("state", String(16), nullable=False),  # requested | approved | rejected | refunded
    Column("decided_by", String(ID), nullable=True),
    Column("requested_ms", BigInteger, nullable=False),
    Column("decided_ms", BigInteger, nullable=True),
    # version 2
    Column("note", Text, nullable=True),  # the viewer's words (personal: erased on request)
    Column("room_id", String(ID), nullable=True),
    Column("sale_id", String(ID), nullable=True),
    Column("decision_note", Text, nullable=True),
    Column("settled_ms", BigInteger, nullable=True),
    Column("restocked", Boolean, nullable=True),
    Column("credited", BigInteger, nullable=True),
)

wallet_ledger = Table(
    "wallet_ledger",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", String(ID), nullable=False),
    Column("delta", BigInteger, nullable=False),
    Column("reason", String(64), nullable=False),
    Column("ref_event_id", String(ID), nullable=False, unique=True),
    Column("ts_ms", BigInteger, nullable=False),
    Index("ix_wallet_user", "user_id", "id"),
)

points_ledger = Table(
    "points_ledger",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", String(ID), nullable=False),
    Column("role", String(8), nullable=False),  # viewer | host
    Column("delta", BigInteger, nullable=False),
    Column("reason", String(64), nullable=False),
    Column("ref_event_id", String(ID), nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    UniqueConstraint("ref_event_id", "user_id", "reason", name="uq_points_ref_user_reason"),
    Index("ix_points_user", "user_id", "role", "id"),
)

# step 5 (M2 3/7): each user's balance per role, the sum of its ``points_ledger`` rows, kept
# in the same transaction as the rows (so reading a balance does not sum a host's millions
# of rows)
points_balances = Table(
    "points_balances",
    metadata,
    Column("user_id", String(ID), nullable=False),
    Column("role", String(8), nullable=False),  # viewer | host
    Column("balance", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "role", name="pk_points_balances"),
)

applied_events = Table(
    "applied_events",
    metadata,
    Column("consumer", String(64), nullable=False),
    Column("event_id", String(ID), nullable=False),
    Column("applied_ms", BigInteger, nullable=True),
    PrimaryKeyConstraint("consumer", "event_id", name="pk_applied_events"),
)

coupon_drops = Table(
    "coupon_drops",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("room_id", String(ID), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # full_reduction | percent
    Column("threshold", BigInteger, nullable=False, default=0),  # spend X (cents)
    Column("value", BigInteger, nullable=False),  # save Y (cents) or percent off
    Column("quantity", Integer, nullable=False),
    Column("per_user", Integer, nullable=False, default=1),
    Column("expires_ms", BigInteger, nullable=False),
    Column("segment_id", String(ID), nullable=True),  # targeted drops (issue 11)
    Column("created_by", String(ID), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

coupon_claims = Table(
    "coupon_claims",
    metadata,
    Column("id", String(ID), primary_key=True),  # the coupon id
    Column("drop_id", String(ID), ForeignKey("coupon_drops.id"), nullable=False),
    Column("user_id", String(ID), nullable=False),
    Column("state", String(16), nullable=False),  # claimed | used | expired
    Column("order_id", String(ID), nullable=True),
    Column("claimed_ms", BigInteger, nullable=False),
    Column("used_ms", BigInteger, nullable=True),
    Index("ix_coupon_claims_drop_user", "drop_id", "user_id"),
    Index("ix_coupon_claims_user", "user_id", "state"),
)

lotteries = Table(
    "lotteries",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("room_id", String(ID), nullable=False, index=True),
    Column("prize", String(200), nullable=False),
    Column("winners_count", Integer, nullable=False),
    Column("rule", JSON, nullable=True),  # entry rule: keyword | gift | follow
    Column("state", String(16), nullable=False),  # open | drawn
    Column("seed_hash", String(128), nullable=False),  # published when it opens
    Column("seed", String(128), nullable=True),  # revealed with the draw
    Column("entrants", JSON, nullable=True),
    Column("winners", JSON, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("drawn_ms", BigInteger, nullable=True),
)

# ---------- step 2 (after-sales): tickets (tickets_sql)

tickets = Table(
    "tickets",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("user_id", String(ID), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("priority", String(8), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("text", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("order_id", String(ID), nullable=True),
    Column("room_id", String(ID), nullable=True),
    Column("assignee", String(ID), nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("first_response_ms", BigInteger, nullable=True),
    Column("resolved_ms", BigInteger, nullable=True),
    Index("ix_tickets_status", "status", "created_ms"),
    Index("ix_tickets_user", "user_id", "created_ms"),
)

ticket_events = Table(
    "ticket_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("ticket_id", String(ID), nullable=False, index=True),
    Column("seq", Integer, nullable=False),
    Column("from_status", String(16), nullable=True),
    Column("to_status", String(16), nullable=False),
    Column("by_user", String(ID), nullable=False),
    Column("note", Text, nullable=True),
    Column("ts_ms", BigInteger, nullable=False),
)

# ---------- step 2 (after-sales): profiles, fan clubs, erasures (profiles_sql)

profiles = Table(
    "profiles",
    metadata,
    Column("user_id", String(ID), primary_key=True),
    Column("display_name", String(200), nullable=True),
    Column("data", JSON, nullable=False),
    Column("erased", Boolean, nullable=False, default=False),
    Column("updated_ms", BigInteger, nullable=False),
)

fan_members = Table(
    "fan_members",
    metadata,
    Column("host_id", String(ID), nullable=False),
    Column("user_id", String(ID), nullable=False),
    Column("following", Boolean, nullable=False, default=False),
    Column("member", Boolean, nullable=False, default=False),
    Column("intimacy", BigInteger, nullable=False, default=0),
    Column("updated_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("host_id", "user_id", name="pk_fan_members"),
    Index("ix_fan_members_board", "host_id", "member", "intimacy"),
    Index("ix_fan_members_user", "user_id"),
)

erasures = Table(
    "erasures",
    metadata,
    Column("pseudonym", String(ID), primary_key=True),
    Column("erased_ms", BigInteger, nullable=False),
)

# ---------- step 2 (after-sales): segments (segments_sql)

segments = Table(
    "segments",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("rule", JSON, nullable=False),
    Column("created_by", String(ID), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

segment_targets = Table(
    "segment_targets",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("segment_id", String(ID), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # coupon | push
    Column("drop_id", String(ID), nullable=True),
    Column("sale_id", String(ID), nullable=True),
    Column("text", Text, nullable=True),
    Column("members", Integer, nullable=False),
    Column("delivered", Integer, nullable=False),
    Column("created_by", String(ID), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

# ---------- step 3 (growth): facts, active days, viewers' growth rows, exposures (growth_sql)

growth_facts = Table(
    "growth_facts",
    metadata,
    Column("event_id", String(ID), nullable=False),
    Column("user_id", String(ID), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("day", Integer, nullable=False),
    Column("amount", BigInteger, nullable=False, default=0),
    Column("room_id", String(ID), nullable=True),
    PrimaryKeyConstraint("event_id", "user_id", name="pk_growth_facts"),
    Index("ix_growth_facts_user", "user_id", "ts_ms"),
    Index("ix_growth_facts_day", "day", "kind"),
)

growth_days = Table(
    "growth_days",
    metadata,
    Column("user_id", String(ID), nullable=False),
    Column("day", Integer, nullable=False),
    PrimaryKeyConstraint("user_id", "day", name="pk_growth_days"),
    Index("ix_growth_days_day", "day"),
)

growth_users = Table(
    "growth_users",
    metadata,
    Column("user_id", String(ID), primary_key=True),
    Column("first_ms", BigInteger, nullable=True),
    Column("first_day", Integer, nullable=True),
    Column("activated_ms", BigInteger, nullable=True),
    Column("first_paid_ms", BigInteger, nullable=True),
    Column("first_paid_event", String(ID), nullable=True),
    Column("channel", String(32), nullable=False, default=ORGANIC),
    Column("invite_code", String(16), nullable=True),
    Column("referrer", String(ID), nullable=True),
    Column("acquired_ms", BigInteger, nullable=True),
    Column("acquired_day", Integer, nullable=True),
    Column("referral_event", String(ID), nullable=True),
    Column("referral_ms", BigInteger, nullable=True),
    Index("ix_growth_users_first_day", "first_day"),
    Index("ix_growth_users_acquired_day", "acquired_day"),
    Index("ix_growth_users_referrer", "referrer"),
)

exp_exposures = Table(
    "exp_exposures",
    metadata,
    Column("exp_id", String(64), nullable=False),
    Column("user_id", String(ID), nullable=False),
    Column("arm", String(32), nullable=False),
    Column("first_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("exp_id", "user_id", name="pk_exp_exposures"),
)

# ---------- step 4 (retention): the fold of the log entries retention trimmed (profiles_sql)

profiles_base = Table(
    "profiles_base",
    metadata,
    Column("user_id", String(ID), primary_key=True),
    Column("data", JSON, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

# ---------- step 6 (the shopping bag): the catalogue of products with SKUs (catalog_sql)
# Redis decides (definitions, stock, holds: catalog_redis); SQL remembers each definition at
# its latest version and every stock move, so that sum(moves.delta) == skus.stocked per SKU.
# The step-1 ``products`` table above is the pin era's, never written.

catalog_products = Table(
    "catalog_products",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("owner_id", String(ID), nullable=False, index=True),  # "" for a platform product
    Column("name", String(200), nullable=False),
    Column("category", String(64), nullable=False, default=""),
    Column("state", String(16), nullable=False),  # catalog.ProductState
    Column("v", Integer, nullable=False),  # the definition's version in Redis
    Column("definition", JSON, nullable=False),  # catalog.Product.definition()
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

catalog_skus = Table(
    "catalog_skus",
    metadata,
    Column("product_id", String(ID), ForeignKey("catalog_products.id"), nullable=False),
    Column("sku_id", String(ID), nullable=False),
    Column("attrs", JSON, nullable=False),
    Column("price", BigInteger, nullable=False),  # cents
    Column("image", String(500), nullable=False, default=""),
    Column("state", String(16), nullable=False),
    Column("stocked", BigInteger, nullable=False, default=0),  # the sum of this SKU's moves
    PrimaryKeyConstraint("product_id", "sku_id", name="pk_catalog_skus"),
)

catalog_stock_moves = Table(
    "catalog_stock_moves",
    metadata,
    Column("event_id", String(200), primary_key=True),  # <product>/<sku>/<seq> (catalog_redis.Move)
    Column("product_id", String(ID), nullable=False),
    Column("sku_id", String(ID), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("delta", BigInteger, nullable=False),
    Column("reason", String(32), nullable=False),  # create | set | add | load
    Column("by_user", String(ID), nullable=False, default=""),
    Column("ts_ms", BigInteger, nullable=False),
    Index("ix_catalog_moves_sku", "product_id", "sku_id", "seq"),
)

# ---------- step 7 (room moderation, issue 20): the audit log and viewers' reports
# (moderation_sql). Redis holds the live state (moderation_redis); SQL remembers every action
# and every report with the comments around it.

moderation_actions = Table(
    "moderation_actions",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("ts_ms", BigInteger, nullable=False),
    Column("room_id", String(ID), nullable=False),  # "" for the platform
    Column("actor_id", String(ID), nullable=False),
    Column("actor_role", String(16), nullable=False),  # moderation.Role
    Column("action", String(32), nullable=False),  # moderation.AUDIT_ACTIONS
    Column("target_id", String(ID), nullable=False, default=""),
    Column("comment_seq", BigInteger, nullable=True),
    Column("until_ms", BigInteger, nullable=True),  # 0: for good; NULL: not a timed action
    Column("reason", String(500), nullable=False, default=""),
    Column("report_id", String(ID), nullable=True),
    Column("details", JSON, nullable=True),
    Index("ix_mod_actions_ts", "ts_ms"),
    Index("ix_mod_actions_room", "room_id", "ts_ms"),
    Index("ix_mod_actions_target", "target_id", "ts_ms"),
    Index("ix_mod_actions_actor", "actor_id", "ts_ms"),
)

moderation_reports = Table(
    "moderation_reports",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("room_id", String(ID), nullable=False),
    Column("reporter_id", String(ID), nullable=False),
    Column("target_id", String(ID), nullable=False),
    Column("comment_seq", BigInteger, nullable=False, default=0),  # 0: a report of the user
    Column("reason", String(32), nullable=False),  # moderation.REPORT_REASONS
    Column("note", String(600), nullable=False, default=""),
    Column("context", JSON, nullable=False),  # the comments around it, from the room's history
    Column("status", String(16), nullable=False),  # open | resolved | dismissed
    Column("created_ms", BigInteger, nullable=False),
    Column("resolved_ms", BigInteger, nullable=True),
    Column("resolved_by", String(ID), nullable=True),
    Column("resolution", JSON, nullable=True),  # {action, audit_id, reason}
    UniqueConstraint("room_id", "reporter_id", "target_id", "comment_seq", name="uq_mod_reports_once"),
    Index("ix_mod_reports_queue", "room_id", "status", "created_ms"),
)

# ---------- step 10 (follower reach): notifications, schedules, subscriptions, fan-outs (reach_sql)

notifications = Table(
    "notifications",
    metadata,
    Column("user_id", String(ID), nullable=False),
    Column("id", String(200), nullable=False),  # the fan-out's event id: one row per user and event
    Column("kind", String(32), nullable=False),  # host.live | schedule.reminder
    Column("host_id", String(ID), nullable=False),
    Column("room_id", String(ID), nullable=True),
    Column("schedule_id", String(ID), nullable=True),
    Column("title", String(200), nullable=False, default=""),
    Column("start_ms", BigInteger, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("read_ms", BigInteger, nullable=True),
    PrimaryKeyConstraint("user_id", "id", name="pk_notifications"),
    Index("ix_notifications_user_created", "user_id", "created_ms"),
)

schedules = Table(
    "schedules",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("host_id", String(ID), nullable=False),
    Column("title", String(200), nullable=False),
    Column("start_ms", BigInteger, nullable=False),
    Column("products", JSON, nullable=False),
    Column("room_id", String(ID), nullable=True),
    Column("state", String(16), nullable=False),  # scheduled | reminded | cancelled
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Index("ix_schedules_host_start", "host_id", "start_ms"),
    Index("ix_schedules_state_start", "state", "start_ms"),
)

schedule_subs = Table(
    "schedule_subs",
    metadata,
    Column("schedule_id", String(ID), nullable=False),
    Column("user_id", String(ID), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("schedule_id", "user_id", name="pk_schedule_subs"),
    Index("ix_schedule_subs_user", "user_id"),
)

reach_fanouts = Table(
    "reach_fanouts",
    metadata,
    Column("event_id", String(200), primary_key=True),
    Column("after_user", String(ID), nullable=False, default=""),  # the last recipient written
    Column("written", BigInteger, nullable=False, default=0),
    Column("done_ms", BigInteger, nullable=True),
    Column("updated_ms", BigInteger, nullable=False),
)

# ---------- step 9 (host earnings): the hosts' share of gift revenue, accruals and reversals (earnings_sql)

host_earnings = Table(
    "host_earnings",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(ID), nullable=False, unique=True),  # the log event (an accrual's is the gift's)
    Column("gift_event_id", String(ID), nullable=False),
    Column("kind", String(16), nullable=False),  # accrual | reversal
    Column("host_id", String(ID), nullable=False),
    Column("room_id", String(ID), nullable=False),
    Column("sender_id", String(ID), nullable=False),
    Column("gift_id", String(ID), nullable=False, default=""),
    Column("value", BigInteger, nullable=False),  # the gift's coins
    Column("share_bp", Integer, nullable=False),  # the split when the gift was accrued, basis points
    Column("amount", BigInteger, nullable=False),  # the host's coins: > 0 accrual, < 0 reversal
    Column("ts_ms", BigInteger, nullable=False),
    UniqueConstraint("gift_event_id", "kind", name="uq_host_earnings_once"),
    Index("ix_host_earnings_host_ts", "host_id", "ts_ms"),
    Index("ix_host_earnings_room_ts", "room_id", "ts_ms"),
)

# ---------- step 11 (fulfilment): shipping addresses, shipments (fulfilment_sql)

addresses = Table(  # personal data: exported with the user's data, deleted by erasure
    "addresses",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("user_id", String(ID), nullable=False),
    Column("name", String(100), nullable=False),
    Column("phone", String(24), nullable=False),
    Column("line1", String(200), nullable=False),
    Column("line2", String(200), nullable=True),
    Column("city", String(100), nullable=False),
    Column("region", String(100), nullable=True),
    Column("postal_code", String(16), nullable=True),
    Column("country", String(2), nullable=False),
    Column("is_default", Boolean, nullable=False, default=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Index("ix_addresses_user", "user_id", "created_ms"),
)

shipments = Table(  # written by the orders worker from order.shipped / order.delivered
    "shipments",
    metadata,
    Column("id", String(ID), primary_key=True),  # <order>.s<n>
    Column("order_id", String(ID), nullable=False, index=True),
    Column("user_id", String(ID), nullable=False, index=True),
    Column("room_id", String(ID), nullable=False),
    Column("kind", String(8), nullable=False),  # outbound | return
    Column("refund_id", String(ID), nullable=True),  # a return's refund
    Column("carrier", String(40), nullable=False),
    Column("tracking_number", String(40), nullable=False),
    Column("lines", JSON, nullable=False),  # {sku: units}
    Column("ship_to", JSON, nullable=True),  # the address snapshot (personal: erased on request)
    Column("state", String(16), nullable=False),  # shipped | delivered
    Column("created_by", String(ID), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("delivered_ms", BigInteger, nullable=True),
    Column("delivered_by", String(ID), nullable=True),
    Index("ix_shipments_room", "room_id", "created_ms"),
)

# ---------- step 12 (cart orders): each cart order's lines (order_lines_sql)

order_lines = Table(  # written by the orders worker from a cart order's events, once per line
    "order_lines",
    metadata,
    Column("order_id", String(ID), primary_key=True),
    Column("n", Integer, primary_key=True),  # 1, 2, ... in the order
    Column("product_id", String(ID), nullable=False),
    Column("sku", String(ID), nullable=False),
    Column("qty", Integer, nullable=False),
    Column("unit_price", BigInteger, nullable=False),  # cents; 0 for a gift
    Column("sale_id", String(ID), nullable=True),  # the flash sale it was reserved through
    Column("gift", Boolean, nullable=False, default=False),
    Index("ix_order_lines_product", "product_id", "sku"),
)

# ---------- step 13 (cart orders): each cart order's coupons (order_lines_sql)

order_coupons = Table(  # written by the orders worker from a cart order's events, once per coupon
    "order_coupons",
    metadata,
    Column("order_id", String(ID), primary_key=True),
    Column("coupon_id", String(128), primary_key=True),
    Column("scope", String(16), nullable=False),  # shop | platform
    Column("discount", BigInteger, nullable=False),  # cents: this coupon's share of the order's discount
)
