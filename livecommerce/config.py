"""One frozen settings object, built once from ``LC_*`` environment variables.

Nothing else in the code base reads ``os.environ``: the CLI calls
:meth:`Settings.from_env` and passes the result down.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

# HS256 keys shorter than the hash are weak (RFC 7518 section 3.2).
MIN_SECRET_BYTES = 32
# Secrets that were ever written in this repository (the built-in default of earlier
# versions): public, so no process but `livecommerce dev` accepts them.
_PUBLISHED_SECRETS = frozenset({"dev-secret-change-me-0123456789abcdef"})
FLUSH_MODES = ("adaptive", "tick")
WS_TRANSPORTS = ("own", "aiohttp")
_SECRET_HINT = "python3 -c 'import secrets; print(secrets.token_hex(32))'"


@dataclass(frozen=True, slots=True)
class Settings:
    """All runtime configuration. Each field maps to ``LC_<FIELD>`` in upper case."""

    redis_url: str = ""  # empty: `livecommerce dev` starts an embedded Redis
    database_url: str = "sqlite+aiosqlite:///.livecommerce/livecommerce.db"
    kafka_bootstrap: str = ""  # empty: the durable log is Redis Streams
    kafka_idempotent: bool = True  # off for the Tansu test broker
    kafka_partitions: int = 6
    kafka_session_timeout_ms: int = 10_000
    log_partitions: int = 1  # Redis Streams partitions per topic (one stream each)
    log_claim_idle_ms: int = 5_000  # a pending entry idle this long goes to another consumer
    worker_batch: int = 1000  # events the orders, wallet and points workers fetch and apply per transaction
    # a worker's /metrics and /healthz (workers/metrics.py) on LC_HOST: its port (0: none) and how long a
    # consumer loop may go without committing (or finding its log drained) before /healthz says 503
    worker_metrics_port: int = 0
    worker_health_stall_s: float = 60.0
    node_id: str = ""
    secret: str = field(default="", repr=False)  # none built in: `dev` makes one, everything else needs LC_SECRET
    token_ttl_s: int = 24 * 3600
    key_prefix: str = "lc"
    host: str = "127.0.0.1"
    port: int = 8080
    # which transport serves /ws on the gateway's port (docs/performance.md, "M2 4/7 lean
    # connections"): "own", a small asyncio Protocol per connection (gateway/wsserver.py; no
    # task while a viewer is idle; 3.4 KiB per idle viewer), or "aiohttp", a WebSocketResponse
    # and a receive task per connection (19.0 KiB); HTTP is aiohttp's on both
    ws_transport: str = "own"
    listen_backlog: int = 2048  # handshakes waiting to be accepted (a join storm: aiohttp's 128 drops SYNs)
    # SIGTERM: /readyz answers 503 (new /ws 503, retried elsewhere by the balancer) for
    # drain_deregister_s while the node still serves its viewers, long enough for the
    # balancer's checks to take it out (HAProxy from `cluster up`: 0.5 s x 2); then its
    # viewers are closed with 1012 and reconnect elsewhere; drain_grace_s later it exits
    drain_deregister_s: float = 1.5
    drain_grace_s: float = 2.0
    data_dir: str = ".livecommerce"
    # wire and fan-out
    max_frame_bytes: int = 16 * 1024
    tick_ms: int = 50
    # when a room's batched events go out: "adaptive" flushes a quiet room's event at once and
    # a busy room's at most once per tick_ms (its frames never closer than that); "tick"
    # flushes every room on the node's fixed tick (the pre-M2 4/7 behaviour, for A/B runs)
    flush: str = "adaptive"
    heartbeat_s: float = 20.0
    idle_timeout_s: float = 60.0
    send_buffer_bytes: int = 256 * 1024  # above this, low-priority frames are shed
    send_buffer_hard_bytes: int = 4 * 1024 * 1024  # above this, the client must resync
    slow_grace_s: float = 5.0  # a client behind this long is closed with 1013
    history_size: int = 1000
    history_ttl_s: int = 3600
    recent_ring: int = 512
    # comments
    comment_max_len: int = 200
    comment_rate: float = 2.0  # tokens per second
    comment_burst: int = 5
    flood_strikes: int = 10  # rate-limited commands within flood_window_s before close 4429
    flood_window_s: float = 10.0
    room_comment_budget: int = 60  # comments/s a room shows before hot-room ranking (0: off)
    moderation_words: str = ""  # path to a word list; empty: the packaged list
    moderation_mode: str = "block"  # block | mask
    # commands in general
    command_rate: float = 50.0
    command_burst: int = 100
    max_conns_per_ip: int = 2000
    max_conns_per_user: int = 20
    allowed_origins: str = ""  # comma separated; empty: any origin
    log_level: str = "INFO"
    log_json: bool = True
    # commerce
    payment_window_s: int = 900
    # the payment boundary (docs/commerce.md): a provider's API and its signed callbacks
    dev_pay: bool = False  # POST /orders/{id}/pay, the provider-less dev payment (on in `livecommerce dev` and tests)
    payment_provider_url: str = ""  # empty: no provider (payment intents answer 403 payments_disabled)
    payment_webhook_secret: str = field(default="", repr=False)  # >= 32 bytes when a provider is set; never logged
    payment_replay_window_s: int = 300  # a callback's timestamp may be this far from now
    payment_currency: str = "CNY"
    # fulfilment (docs/commerce.md): receipt confirmed automatically this long after delivery,
    # the sweep that does it, and the carriers' signed delivery callbacks
    auto_confirm_s: int = 7 * 86400
    auto_confirm_sweep_s: float = 60.0
    carrier_webhook_secret: str = field(default="", repr=False)  # empty: delivery callbacks refused (ops mark deliveries)
    stock_broadcast_ms: int = 250
    gift_catalogue: str = ""  # path; empty: packaged catalogue
    level_thresholds: str = "0,100,500,2000,10000,50000"
    comment_points: int = 1
    comment_points_daily_cap: int = 20
    watch_points_per_min: int = 1
    points_per_coupon_coin: int = 10
    host_gift_share: float = 0.5  # the host's share of each gift's coins (0..1), recorded on each accrual (docs/earnings.md)
    test_coins: bool = False  # a viewer may top up its own wallet (dev and demos); otherwise ops only
    # retention (docs/retention.md): nothing in Redis, the log or SQLite's WAL grows forever
    sale_retention_s: int = 30 * 86400  # a settled sale's Redis keys live this long (refunds: 15 days)
    room_retention_s: int = 7 * 86400  # a room's counters and caches after their last write
    user_cache_ttl_s: int = 30 * 86400  # per-user caches (points level), refreshed on write
    log_retain_s: int = 86400  # log entries every group has passed are kept this long
    log_max_age_s: int = 30 * 86400  # hard cap: older entries go even if a group lags (0: none)
    retention_interval_s: float = 60.0  # the retention worker's period
    # the gateway process's garbage collector (gateway/gc_policy.py)
    gc_freeze: bool = True  # freeze what survives each full collection, so later ones skip it
    gc_unfreeze_s: float = 600.0  # thaw the frozen objects this often (cyclic garbage among them is reclaimed)

    def __post_init__(self) -> None:
        if self.ws_transport not in WS_TRANSPORTS:
            raise ConfigError(f"LC_WS_TRANSPORT={self.ws_transport!r}: choose one of {', '.join(WS_TRANSPORTS)}")
        if self.flush not in FLUSH_MODES:
            raise ConfigError(f"LC_FLUSH={self.flush!r}: choose one of {', '.join(FLUSH_MODES)}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``LC_*`` variables, convert them to the field types, apply overrides.

        Raises:
            ConfigError: a variable does not parse as its field's type.
        """
        if env is None:
            env = {**_dev_env(os.environ.get("LC_DATA_DIR", ".livecommerce")), **os.environ}
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"LC_{f.name.upper()}")
            if raw is None:
                continue
            values[f.name] = _convert(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        if not settings.node_id:
            settings = dataclasses.replace(settings, node_id=f"n{os.getpid()}")
        return settings

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def check_production(self) -> None:
        """Refuse a secret no real deployment may run on. Every process but ``livecommerce
        dev`` calls this at start (the CLI does), so tests may build Settings freely.

        Raises:
            ConfigError: ``secret`` is empty, shorter than :data:`MIN_SECRET_BYTES` bytes, or
                one that was published in this repository.
        """
        n = len(self.secret.encode())
        if not self.secret:
            raise ConfigError(
                "LC_SECRET is not set: every gateway and worker needs the same secret of at least "
                f"{MIN_SECRET_BYTES} bytes, e.g. export LC_SECRET=$({_SECRET_HINT}) (or try it all with `livecommerce dev`)"
            )
        if self.secret in _PUBLISHED_SECRETS:
            raise ConfigError(f"LC_SECRET is a development secret published in livecommerce's source: generate your own with {_SECRET_HINT}")
        if n < MIN_SECRET_BYTES:
            raise ConfigError(f"LC_SECRET is {n} bytes, it must be at least {MIN_SECRET_BYTES}: generate one with {_SECRET_HINT}")
        self.check_payments()

    def check_payments(self) -> None:
        """Raises:
            ConfigError: a payment provider is set without a webhook secret of at least
                :data:`MIN_SECRET_BYTES` bytes.
        """
        if self.payment_provider_url and len(self.payment_webhook_secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"LC_PAYMENT_WEBHOOK_SECRET must be at least {MIN_SECRET_BYTES} bytes when LC_PAYMENT_PROVIDER_URL "
                              f"is set (the provider signs its callbacks with it): generate one with {_SECRET_HINT}")

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(o.strip() for o in self.allowed_origins.split(",") if o.strip())

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(int(x) for x in self.level_thresholds.split(","))


DEV_ENV_FILE = "dev.env"


@dataclass(frozen=True, slots=True)
class DevEnv:
    """A ``dev.env`` file: what a running ``livecommerce dev`` wrote into its data directory
    (its embedded Redis socket, SQLite file, secret and URL) for the other commands started
    in the same directory. It belongs to the process that wrote it: ``pid`` (and its kernel
    start time, which tells it from a reused pid) is inside; a file whose process is gone is
    stale and counts for nothing."""

    path: str
    values: dict[str, str]  # the LC_* lines
    pid: int | None
    pid_start: int | None
    url: str

    @property
    def alive(self) -> bool:
        return self.pid is not None and pid_alive(self.pid, self.pid_start)


def read_dev_env(data_dir: str) -> DevEnv | None:
    """The ``dev.env`` of ``data_dir``, live or stale; None if there is none."""
    path = os.path.join(data_dir, DEV_ENV_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    raw: dict[str, str] = {}
    for line in lines:
        k, sep, v = line.partition("=")
        if sep and not k.startswith("#"):
            raw[k.strip()] = v.strip()

    def num(key: str) -> int | None:
        try:
            return int(raw[key])
        except (KeyError, ValueError):
            return None

    return DevEnv(path, {k: v for k, v in raw.items() if k.startswith("LC_")}, num("DEV_PID"), num("DEV_PID_START"),
                  raw.get("DEV_URL", ""))


def start_ticks(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot); None if it is gone, a
    zombie, or this is not Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def pid_alive(pid: int, started: int | None = None) -> bool:
    """Whether process ``pid`` runs (and, given ``started``, is the one that started then)."""
    if Path("/proc").is_dir():
        ticks = start_ticks(pid)
        return ticks is not None and (started is None or ticks == started)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dev_env(data_dir: str) -> dict[str, str]:
    """``LC_*`` values of the live ``dev.env`` of ``data_dir`` (none if stale or absent).
    Real environment variables win over them."""
    dev = read_dev_env(data_dir)
    return dict(dev.values) if dev is not None and dev.alive else {}


def secret_source(env: Mapping[str, str] | None = None) -> tuple[str, DevEnv | None]:
    """Where :meth:`Settings.from_env` (without an explicit ``env``) takes the secret from:
    ``("env", dev)`` for ``LC_SECRET``, ``("dev.env", dev)`` for the live ``dev.env`` of the
    data directory, ``("", dev)`` for nowhere. ``dev`` is that directory's ``dev.env``
    (live or stale, or None), for messages."""
    env = os.environ if env is None else env
    dev = read_dev_env(env.get("LC_DATA_DIR", ".livecommerce"))
    if "LC_SECRET" in env:  # even empty: it hides dev.env's
        return "env", dev
    if dev is not None and dev.alive and dev.values.get("LC_SECRET"):
        return "dev.env", dev
    return "", dev


def _convert(name: str, type_name: Any, raw: str) -> Any:
    t = str(type_name)
    try:
        if t == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if t == "int":
            return int(raw)
        if t == "float":
            return float(raw)
    except ValueError as exc:
        raise ConfigError(f"LC_{name.upper()}={raw!r} is not a valid {t}") from exc
    return raw
