"""Idempotency keys bound to the request they were first used for.

A client may retry a money request (pay, top-up, refund, redeem ...) with the same key and
must get the first answer again; but a key reused for *another* request must never answer
for it. As in the common practice of payment APIs, a key is scoped to the caller and bound
to a fingerprint of ``(method, route, target, body)``:

* first use: the key is claimed (``new``), the request runs, its answer is stored;
* same key, same fingerprint, answer stored: ``replay`` (the stored status and body);
* same key, same fingerprint, first request still running: ``in_flight`` (409, retry later);
* same key, another fingerprint: ``conflict`` (422 ``idempotency_conflict``), nothing runs.

Answers that say "try again" (5xx, 429, 404) are not stored: the claim is released so a retry
runs the request again. This module is pure: the fingerprint, the decision and the memory
twin of the :class:`IdempotencyStore` port; :mod:`livecommerce.idempotency_redis` is the
Redis adapter, and ``tests/test_idempotency.py`` runs one contract over both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .errors import BadFrame

IDEMPOTENCY_TTL_S = 24 * 3600  # a key answers for a day, as payment providers keep theirs
KEY_MAX = 128

Outcome = Literal["new", "replay", "in_flight", "conflict"]


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored answer: HTTP status and the JSON body text."""

    status: int
    body: str


@dataclass(frozen=True, slots=True)
class Begun:
    outcome: Outcome
    answer: Stored | None = None


def check_key(key: str) -> str:
    """A client's key: 1..128 printable ASCII characters without spaces.

    Raises:
        BadFrame: (``invalid``) empty, too long or with other characters.
    """
    if not 0 < len(key) <= KEY_MAX or not all(33 <= ord(c) < 127 for c in key):
        raise BadFrame(f"an idempotency key must be 1..{KEY_MAX} printable ASCII characters without spaces", code="invalid")
    return key


def fingerprint(method: str, route: str, target: str, body: Any) -> str:
    """The request a key is bound to: method, route template, target id and the body in
    canonical JSON (sorted keys), hashed."""
    canon = json.dumps([method.upper(), route, target, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:32]


def storable(status: int) -> bool:
    """Whether an answer is final for its key (a retry must see it again). 5xx and 429 say
    "try again", and a 404 may only mean "not there yet" (SQL behind the log), so their
    claim is released instead and a retry runs again."""
    return status < 500 and status not in (404, 429)


# record encoding, shared by the adapters: "<fp>|pending" or "<fp>|<status>|<body>"
def encode_pending(fp: str) -> str:
    return f"{fp}|pending"


def encode_done(fp: str, answer: Stored) -> str:
    return f"{fp}|{answer.status}|{answer.body}"


def decide(record: str | None, fp: str) -> Begun:
    """What a request with fingerprint ``fp`` does, given the key's record (``None``: the
    caller just claimed it)."""
    if record is None:
        return Begun("new")
    rec_fp, _, rest = record.partition("|")
    if rec_fp != fp:
        return Begun("conflict")
    if rest == "pending":
        return Begun("in_flight")
    status, _, body = rest.partition("|")
    return Begun("replay", Stored(int(status), body))


class IdempotencyStore(Protocol):
    """Port: claim a key for a fingerprint, store the answer, or release the claim."""

    async def begin(self, scope: str, fp: str, *, ttl_s: int = IDEMPOTENCY_TTL_S) -> Begun: ...

    async def finish(self, scope: str, fp: str, answer: Stored, *, ttl_s: int = IDEMPOTENCY_TTL_S) -> None: ...

    async def release(self, scope: str, fp: str) -> None: ...


class MemoryIdempotency:
    """The in-memory twin (one process; no expiry clock: tests and ``decide``'s contract)."""

    def __init__(self) -> None:
        self.records: dict[str, str] = {}

    async def begin(self, scope: str, fp: str, *, ttl_s: int = IDEMPOTENCY_TTL_S) -> Begun:
        rec = self.records.get(scope)
        if rec is None:
            self.records[scope] = encode_pending(fp)
        return decide(rec, fp)

    async def finish(self, scope: str, fp: str, answer: Stored, *, ttl_s: int = IDEMPOTENCY_TTL_S) -> None:
        if self.records.get(scope, "").startswith(f"{fp}|"):
            self.records[scope] = encode_done(fp, answer)

    async def release(self, scope: str, fp: str) -> None:
        if self.records.get(scope) == encode_pending(fp):
            del self.records[scope]
