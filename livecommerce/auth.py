"""JWT tokens (HS256): who the user is, their role, and for hosts which rooms they run.

Pure: the clock is an argument.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

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
    return TokenVerifier(secret).verify(token, now_s=now_s)[0]


#: the header :func:`issue_token` writes (PyJWT's for HS256)
_OUR_HEADER = {"alg": "HS256", "typ": "JWT"}
_OUR_HEADER_B64 = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"  # how issue_token (PyJWT) encodes it
_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\Z")
_SIMPLE_CLAIMS = frozenset(("sub", "role", "rooms", "name", "iat", "exp", "jti"))
_OPTIONS: Any = {"require": ["sub", "role", "exp", "iat"], "verify_exp": False}


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class TokenVerifier:
    """HS256 verification with the secret prepared once: the gateway checks one token per
    connection, and a join storm checks thousands per second.

    The tokens :func:`issue_token` writes (header ``{"alg": "HS256", "typ": "JWT"}``, only
    its claims, ``iat`` not in the future) are checked here directly: signature
    (constant-time), then the claims. Such a token is one PyJWT accepts too, with the same
    claims; every other token (another header, other claims, a bad signature or encoding)
    goes through PyJWT itself, so what is refused, and the reason given, stay PyJWT's.
    """

    __slots__ = ("_fast", "_key", "_secret")

    def __init__(self, secret: str) -> None:
        self._secret = secret
        self._key = secret.encode()
        try:  # a secret PyJWT refuses as an HMAC key (a PEM or JWK-looking one) never takes the fast path
            jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256).prepare_key(secret)
            self._fast = True
        except jwt.PyJWTError:
            self._fast = False

    def verify(self, token: str | None, *, now_s: int) -> tuple[Identity, int]:
        """The token's identity and its ``exp`` (seconds).

        Raises:
            Unauthorized: missing, malformed, tampered, expired token or unknown role.
        """
        if not token:
            raise Unauthorized("missing token: pass ?token=<jwt> or an Authorization: Bearer header")
        if len(token) > 4096:
            raise Unauthorized("token too long")
        claims = self._checked(token) if self._fast else None
        if claims is None:
            try:
                claims = jwt.decode(token, self._secret, algorithms=["HS256"], options=_OPTIONS)
            except jwt.PyJWTError as exc:
                raise Unauthorized(f"invalid token: {exc.__class__.__name__}") from exc
        return _identity(claims, now_s)

    def _checked(self, token: str) -> dict[str, Any] | None:
        """The claims of a token of the shape we issue, verified; None: ask PyJWT."""
        if not _JWS.match(token):
            return None
        signing, _, s = token.rpartition(".")
        h, _, p = signing.partition(".")
        try:
            mac = hmac.new(self._key, signing.encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(mac, _b64(s)):
                return None
            if h != _OUR_HEADER_B64 and json.loads(_b64(h)) != _OUR_HEADER:
                return None
            claims = json.loads(_b64(p))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(claims, dict) or not claims.keys() <= _SIMPLE_CLAIMS:
            return None
        iat, exp, jti = claims.get("iat"), claims.get("exp"), claims.get("jti", "")
        if not (type(iat) is int and type(exp) is int and isinstance(claims.get("sub"), str) and isinstance(jti, str)):
            return None
        if iat > int(time.time()):  # PyJWT says ImmatureSignatureError (on its own clock)
            return None
        if claims.get("role") is None:  # PyJWT's MissingRequiredClaimError
            return None
        return claims


def _identity(claims: dict[str, Any], now_s: int) -> tuple[Identity, int]:
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
    ident = Identity(
        user=sub,
        role=role,
        rooms=tuple(rooms),
        name=str(claims.get("name") or sub)[:64],
        jti=str(claims.get("jti", "")),
    )
    return ident, exp
