"""JWT tokens (HS256): who the user is, their role, and for hosts which rooms they run.

Pure: the clock is an argument.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import jwt

from .errors import Forbidden, Unauthorized

ROLES = ("viewer", "host", "ops")


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    role: str
    rooms: tuple[str, ...] = ()
    name: str = ""
    jti: str = ""

    @property
    def is_ops(self) -> bool:
        """The ops role: may act for any user and in any room."""
        return self.role == "ops"

    def may_host(self, room: str) -> bool:
        """Ops may act in any room; a host only in the rooms of the token."""
        return self.is_ops or (self.role == "host" and room in self.rooms)

    def require_host(self, room: str) -> None:
        """Raises:
        Forbidden: neither ops nor a host of ``room``.
        """
        if not self.may_host(room):
            raise Forbidden(f"{self.role} {self.user!r} may not run room {room!r}")

    def require_ops(self) -> None:
        """Raises:
        Forbidden: not ops.
        """
        if not self.is_ops:
            raise Forbidden("this endpoint is for the ops role")

    def require_self_or_ops(self, user: str) -> None:
        """For what belongs to one user (wallet, points, referrals): that user or ops.

        Raises:
            Forbidden: neither ``user`` nor ops.
        """
        if self.user != user and not self.is_ops:
            raise Forbidden("only the user themself or ops may do this")


def issue_token(
    secret: str,
    *,
    user: str,
    role: str,
    rooms: tuple[str, ...] = (),
    name: str = "",
    now_s: int,
    ttl_s: int,
) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    if not user or len(user) > 64:
        raise ValueError("user must be 1..64 characters")
    claims = {
        "sub": user,
        "role": role,
        "rooms": list(rooms),
        "name": name or user,
        "iat": now_s,
        "exp": now_s + ttl_s,
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(secret: str, token: str | None, *, now_s: int) -> Identity:
    """Raises:
        Unauthorized: missing, malformed, tampered, expired token or unknown role.
    """
    if not token:
        raise Unauthorized("missing token: pass ?token=<jwt> or an Authorization: Bearer header")
    if len(token) > 4096:
        raise Unauthorized("token too long")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            options={"require": ["sub", "role", "exp", "iat"], "verify_exp": False},
        )
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid token: {exc.__class__.__name__}") from exc
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp <= now_s:
        raise Unauthorized("token expired: ask for a new one (livecommerce token ...)")
    role = claims.get("role")
    if role not in ROLES:
        raise Unauthorized("token has an unknown role")
    rooms = claims.get("rooms") or []
    if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
        raise Unauthorized("token 'rooms' must be a list of strings")
    sub = claims["sub"]
    if not isinstance(sub, str) or not sub or len(sub) > 64:
        raise Unauthorized("token 'sub' must be a user id string")
    return Identity(
        user=sub,
        role=role,
        rooms=tuple(rooms),
        name=str(claims.get("name") or sub)[:64],
        jti=str(claims.get("jti", "")),
    )
