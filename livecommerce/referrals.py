"""Invite codes and referral rewards. No I/O.

A viewer asks for their invite code (``POST /api/v1/invites``: one code per user, kept in
Redis, :mod:`livecommerce.referrals_redis`). A newcomer who arrives with it reports it
once (``POST /api/v1/growth/acquire {invite_code}``): the gateway resolves the code to
its owner, refuses one's own code, and appends ``growth.acquired {user, channel:
"invite", invite_code, referrer}`` (the first acquisition of a user wins; see
:mod:`livecommerce.growth`).

**Reward rule.** Once the invitee's first paid order is settled (the growth worker has
applied its ``order.paid``) *and* the invite is known, both sides earn viewer points,
provided that order was paid at or after the invite was reported (a customer who had
already bought was not brought by the invite, so claiming a code later earns nothing):

======================  =========================================  ===================
who                     points                                      reason
======================  =========================================  ===================
the invitee             :data:`INVITEE_POINTS`                      ``referral.invitee``
the referrer            flag ``referral.referrer_points`` of the    ``referral.referrer``
                        referrer (default 200; an experiment may
                        vary it)
======================  =========================================  ===================

Exactly once: the growth worker claims the reward in the same SQL transaction as the
ledger rows, by setting ``growth_users.referral_event`` where it is still empty (one row
per invitee, so two deliveries, two orders or two consumers cannot both claim it), and
each ledger row's ``ref_event_id`` is the event id of the paid order it rewards (unique
per user and reason in ``points_ledger``). Which order: the invitee's earliest paid order
known when both conditions first hold, so the rule does not depend on the order in which
the ``orders`` and ``growth`` topics are consumed.

A refund of that order does not take the reward back (documented choice: the reward pays
for the acquisition, which happened).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import BadFrame, Conflict, NotFound
from .store import PointsRole

INVITEE_POINTS = 100
REFERRER_FLAG = "referral.referrer_points"
REFERRER_POINTS = 200
MAX_REFERRER_POINTS = 100_000
REASON_INVITEE = "referral.invitee"
REASON_REFERRER = "referral.referrer"
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
CODE_LEN = 8

_CODE = re.compile(rf"^[{CODE_ALPHABET}]{{{CODE_LEN}}}$")


def new_code(random_bytes: bytes) -> str:
    """An invite code from ``CODE_LEN`` random bytes (the caller's randomness):
    8 characters of a 32-letter alphabet without look-alikes (40 bits)."""
    if len(random_bytes) < CODE_LEN:
        raise ValueError(f"need {CODE_LEN} random bytes")
    return "".join(CODE_ALPHABET[b % 32] for b in random_bytes[:CODE_LEN])


def check_code(code: Any) -> str:
    """Normalise (upper case, no spaces or dashes) and validate a code.

    Raises:
        BadFrame: (``invalid``) not a code.
    """
    if not isinstance(code, str):
        raise BadFrame("'invite_code' must be a string", code="invalid")
    c = code.strip().upper().replace("-", "").replace(" ", "")
    if not _CODE.match(c):
        raise BadFrame(f"'invite_code' must be {CODE_LEN} letters and digits", code="invalid")
    return c


def check_referral(user: str, owner: str | None) -> str:
    """The referrer of ``user`` arriving with a code owned by ``owner``.

    Raises:
        NotFound: (``unknown_code``) nobody owns the code.
        Conflict: (``own_code``) one's own code.
    """
    if owner is None:
        raise NotFound("no such invite code", code="unknown_code")
    if owner == user:
        raise Conflict("an invite code cannot be used by its owner", code="own_code")
    return owner


def referrer_points(flag_value: Any) -> int:
    """The referrer's points from the experiment flag (default on nonsense)."""
    if isinstance(flag_value, bool) or not isinstance(flag_value, int | float):
        return REFERRER_POINTS
    return max(0, min(MAX_REFERRER_POINTS, int(flag_value)))


@dataclass(frozen=True, slots=True)
class Reward:
    invitee: str
    referrer: str
    event_id: str  # the paid order's event id
    ts: int


def reward_rows(r: Reward, *, referrer_pts: int, invitee_pts: int = INVITEE_POINTS) -> list[tuple[str, PointsRole, int, str, str, int]]:
    """Points ledger rows ``(user, role, delta, reason, ref_event_id, ts)`` of a reward."""
    rows: list[tuple[str, PointsRole, int, str, str, int]] = []
    if invitee_pts > 0:
        rows.append((r.invitee, "viewer", invitee_pts, REASON_INVITEE, r.event_id, r.ts))
    if referrer_pts > 0:
        rows.append((r.referrer, "viewer", referrer_pts, REASON_REFERRER, r.event_id, r.ts))
    return rows
