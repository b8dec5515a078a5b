"""One frozen settings object, built once from ``LC_*`` environment variables.

Nothing else in the code base reads ``os.environ``: the CLI calls
:meth:`Settings.from_env` and passes the result down.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

_DEFAULT_SECRET = "dev-secret-change-me-0123456789abcdef"


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
    node_id: str = ""
    secret: str = field(default=_DEFAULT_SECRET, repr=False)
    token_ttl_s: int = 24 * 3600
    key_prefix: str = "lc"
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = ".livecommerce"
    # wire and fan-out
    max_frame_bytes: int = 16 * 1024
    tick_ms: int = 50
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
    stock_broadcast_ms: int = 250
    gift_catalogue: str = ""  # path; empty: packaged catalogue
    level_thresholds: str = "0,100,500,2000,10000,50000"
    comment_points: int = 1
    comment_points_daily_cap: int = 20
    watch_points_per_min: int = 1
    points_per_coupon_coin: int = 10
    # retention (docs/retention.md): nothing in Redis, the log or SQLite's WAL grows forever
    sale_retention_s: int = 30 * 86400  # a settled sale's Redis keys live this long (refunds: 15 days)
    room_retention_s: int = 7 * 86400  # a room's counters and caches after their last write
    user_cache_ttl_s: int = 30 * 86400  # per-user caches (points level), refreshed on write
    log_retain_s: int = 86400  # log entries every group has passed are kept this long
    log_max_age_s: int = 30 * 86400  # hard cap: older entries go even if a group lags (0: none)
    retention_interval_s: float = 60.0  # the retention worker's period

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

    @property
    def secret_is_default(self) -> bool:
        return self.secret == _DEFAULT_SECRET

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(o.strip() for o in self.allowed_origins.split(",") if o.strip())

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(int(x) for x in self.level_thresholds.split(","))


DEV_ENV_FILE = "dev.env"


def _dev_env(data_dir: str) -> dict[str, str]:
    """``LC_*`` values that a running ``livecommerce dev`` wrote into its data directory
    (its embedded Redis socket, SQLite file and secret), so that other commands started in
    the same directory (``token``, ``campaign load``, ``worker``) reach the same services.
    Real environment variables win."""
    path = os.path.join(data_dir, DEV_ENV_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        k, sep, v = line.partition("=")
        if sep and k.startswith("LC_"):
            out[k.strip()] = v.strip()
    return out


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
