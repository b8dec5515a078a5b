"""``livecommerce doctor``'s verdicts: each check's readings in, a :class:`Finding` out.

No I/O: ``livecommerce.cli_doctor`` takes the readings (Redis ``INFO`` and ``TIME``, the
schema version, the log's topics and groups, what the listed gateways and workers answer)
and prints the findings, one line each. A finding is ``ok``, ``warn`` (worth a look, the
exit code stays 0) or ``fail`` (the deployment is wrong: exit 1), with the fix to apply.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

from .config import _PUBLISHED_SECRETS, _SECRET_HINT, MIN_SECRET_BYTES

Level = Literal["ok", "warn", "fail"]

#: the least estimated entropy (bits) a secret may have: a random 32-byte hex string has ~120
#: by this measure (its characters' frequencies), a repeated word far less
MIN_SECRET_BITS = 96.0
#: Redis versions below this lack what the code uses (sharded pub/sub, XINFO lag)
MIN_REDIS = (7, 0)
#: clocks further apart than this make tokens' expiry, payment windows and ops rates wrong
MAX_SKEW_MS = 500
#: a group this far behind on a topic is worth a look
LAG_WARN = 10_000
#: a group whose freshest member has been silent this long has no live worker
IDLE_WARN_MS = 60_000


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's verdict: ``check`` names it (``secret``, ``redis.version``, ``clock.redis`` ...)."""

    check: str
    level: Level
    message: str
    fix: str = ""

    def line(self) -> str:
        tag = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}[self.level]
        return f"{tag} {self.check}: {self.message}" + (f" -> {self.fix}" if self.fix else "")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def failed(findings: list[Finding]) -> bool:
    return any(f.level == "fail" for f in findings)


def _period(text: str) -> str:
    """The shortest ``unit`` whose repetition spells ``text`` (``"abcabca"`` -> ``"abc"``)."""
    n = len(text)
    for p in range(1, n):
        if all(text[i] == text[i - p] for i in range(p, n)):
            return text[:p]
    return text


def secret_bits(secret: str) -> float:
    """Estimated entropy of ``secret`` in bits: the length of its shortest repeating unit
    times the Shannon entropy of that unit's characters' frequencies (a lower bound for
    random strings; near 0 for ``aaaa...``, small for ``passwordpassword...``)."""
    secret = _period(secret)
    if not secret:
        return 0.0
    n = len(secret)
    per_char = -sum(c / n * math.log2(c / n) for c in Counter(secret).values())
    return n * per_char


def check_secret(secret: str) -> Finding:
    """``LC_SECRET``: set, not the published development secret, at least
    :data:`~livecommerce.config.MIN_SECRET_BYTES` bytes and :data:`MIN_SECRET_BITS` of entropy."""
    fix = f"generate one with {_SECRET_HINT} and give every gateway and worker the same LC_SECRET"
    if not secret:
        return Finding("secret", "fail", "LC_SECRET is not set", fix)
    if secret in _PUBLISHED_SECRETS:
        return Finding("secret", "fail", "LC_SECRET is the development secret published in livecommerce's source", fix)
    size = len(secret.encode())
    if size < MIN_SECRET_BYTES:
        return Finding("secret", "fail", f"LC_SECRET is {size} bytes, under the {MIN_SECRET_BYTES} an HS256 key needs", fix)
    bits = secret_bits(secret)
    if bits < MIN_SECRET_BITS:
        return Finding("secret", "fail", f"LC_SECRET has about {bits:.0f} bits of entropy (repeated or few distinct characters), "
                       f"under {MIN_SECRET_BITS:.0f}", fix)
    return Finding("secret", "ok", f"{size} bytes, about {bits:.0f} bits of entropy")


def parse_version(text: str) -> tuple[int, ...]:
    """``"7.0.15"`` -> ``(7, 0, 15)`` (what does not parse counts as 0)."""
    out = []
    for part in text.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def check_redis_version(version: str) -> Finding:
    if parse_version(version)[:2] < MIN_REDIS:
        return Finding("redis.version", "fail", f"Redis {version} is older than {MIN_REDIS[0]}.{MIN_REDIS[1]} "
                       "(sharded pub/sub, XINFO lag)", "upgrade Redis to 7.0 or later")
    return Finding("redis.version", "ok", f"Redis {version}")


def check_redis_persistence(info: Mapping[str, str]) -> Finding:
    """The log and the money scripts live in Redis: AOF (or at least RDB snapshots) keeps them
    across a restart, and ``noeviction`` keeps Redis from dropping keys under memory pressure."""
    policy = info.get("maxmemory_policy", "")
    if policy and policy != "noeviction":
        return Finding("redis.persistence", "fail", f"maxmemory-policy is {policy}: Redis may evict stock, wallets or log entries",
                       "CONFIG SET maxmemory-policy noeviction (and in redis.conf)")
    if info.get("aof_enabled") != "1":
        return Finding("redis.persistence", "warn", "AOF is off: a Redis restart loses what was written since the last snapshot",
                       "appendonly yes, appendfsync everysec (docs/deploy.md, Redis)")
    return Finding("redis.persistence", "ok", "AOF on" + (f", maxmemory-policy {policy}" if policy else ""))


def check_cluster(info: Mapping[str, str]) -> Finding:
    """``CLUSTER INFO``: state ok, all 16384 slots assigned and none failing."""
    state = info.get("cluster_state", "?")
    assigned = int(info.get("cluster_slots_assigned", "0") or 0)
    failing = int(info.get("cluster_slots_fail", "0") or 0) + int(info.get("cluster_slots_pfail", "0") or 0)
    if state != "ok" or assigned != 16384 or failing:
        return Finding("redis.cluster", "fail", f"cluster_state {state}, {assigned}/16384 slots assigned, {failing} failing",
                       "check `redis-cli --cluster check HOST:PORT`: a master without a replica died, or slots are unassigned")
    return Finding("redis.cluster", "ok", f"cluster_state ok, 16384 slots, {info.get('cluster_known_nodes', '?')} nodes")


def check_schema(current: int, latest: int) -> Finding:
    if current < latest:
        what = "no schema yet" if current == 0 else f"schema version {current}"
        return Finding("database.schema", "fail", f"{what}, the code's latest is {latest}", "run `livecommerce db upgrade`")
    if current > latest:
        return Finding("database.schema", "fail", f"schema version {current} is newer than this code's latest ({latest})",
                       "run the release that migrated it (no downgrades)")
    return Finding("database.schema", "ok", f"schema version {current} (latest)")


def skew_ms(local_before_ms: float, remote_ms: float, local_after_ms: float) -> tuple[float, float]:
    """The remote clock minus ours, taken at the middle of the round trip, and the
    uncertainty (half the round trip)."""
    mid = (local_before_ms + local_after_ms) / 2
    return remote_ms - mid, (local_after_ms - local_before_ms) / 2


def check_skew(check: str, what: str, skew: float, uncertainty: float, *, bound_ms: float = MAX_SKEW_MS) -> Finding:
    """``skew`` (remote minus local, ms) beyond ``bound_ms`` even after the round trip's
    uncertainty fails."""
    if abs(skew) - uncertainty > bound_ms:
        side = "ahead of" if skew > 0 else "behind"
        return Finding(check, "fail", f"{what} is {abs(skew):.0f} ms {side} this host (round trip ±{uncertainty:.0f} ms)",
                       "run NTP (chrony or systemd-timesyncd) on every host")
    return Finding(check, "ok", f"{what} within {abs(skew):.0f} ms (±{uncertainty:.0f} ms)")


def check_topic(topic: str, partitions: int | None, expected: int) -> Finding:
    """A Kafka topic exists with the partitions the settings expect."""
    name = f"log.topic.{topic}"
    if partitions is None:
        return Finding(name, "warn", "does not exist yet (made on the first append)",
                       f"create it with {expected} partitions, or let the first gateway do it")
    if partitions < expected:
        return Finding(name, "fail", f"{partitions} partitions, fewer than LC_KAFKA_PARTITIONS={expected}",
                       "add partitions (kafka-topics --alter --partitions N); a key's partition moves, so do it before the show")
    return Finding(name, "ok", f"{partitions} partitions")


def check_group(topic: str, group: str, lag: int | None, idle_ms: int | None) -> Finding:
    """A consumer group on a topic: behind by ``lag`` events; its freshest member silent
    ``idle_ms`` (None: no members)."""
    name = f"log.group.{topic}.{group}"
    parts = [f"lag {lag}" if lag is not None else "lag unknown"]
    if idle_ms is None:
        return Finding(name, "warn", ", ".join([*parts, "no member"]), f"start `livecommerce worker` for group {group}")
    parts.append(f"freshest member seen {idle_ms / 1000:.1f} s ago")
    if idle_ms > IDLE_WARN_MS:
        return Finding(name, "warn", ", ".join(parts), f"no live worker reads {topic} for {group}: start one")
    if lag is not None and lag > LAG_WARN:
        return Finding(name, "warn", ", ".join(parts), "the group falls behind: add workers (up to the partitions) or check its errors")
    return Finding(name, "ok", ", ".join(parts))
