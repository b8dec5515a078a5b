"""``TokenVerifier`` checks the tokens we issue without PyJWT's per-call key preparation,
and answers every token exactly as PyJWT-based verification does (same identity, same
refusal and reason), including the ones it hands to PyJWT."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livecommerce.auth import ROLES, Identity, TokenVerifier, issue_token
from livecommerce.errors import Unauthorized

SECRET = "s3cret-for-the-verifier-tests-" + "0123456789abcdef" * 3


def reference(secret: str, token: str | None, now_s: int) -> tuple[Identity, int] | str:
    """The verification as it was before the verifier: PyJWT decodes every token."""
    try:
        if not token:
            raise Unauthorized("missing token: pass ?token=<jwt> or an Authorization: Bearer header")
        if len(token) > 4096:
            raise Unauthorized("token too long")
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"],
                                options={"require": ["sub", "role", "exp", "iat"], "verify_exp": False})
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
        return Identity(user=sub, role=role, rooms=tuple(rooms), name=str(claims.get("name") or sub)[:64],
                        jti=str(claims.get("jti", ""))), exp
    except Unauthorized as exc:
        return exc.message


def verdict(v: TokenVerifier, token: str | None, now_s: int) -> tuple[Identity, int] | str:
    try:
        return v.verify(token, now_s=now_s)
    except Unauthorized as exc:
        return exc.message


def b64(obj: Any) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def crafted(now: int) -> dict[str, str | None]:
    good = issue_token(SECRET, user="alice", role="host", rooms=("r1",), now_s=now, ttl_s=600)
    h, p, s = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))

    def signed(c: dict[str, Any], header: dict[str, Any] | None = None, secret: str = SECRET) -> str:
        return jwt.encode(c, secret, algorithm="HS256", headers=header)

    return {
        "good": good,
        "none": None,
        "empty": "",
        "garbage": "not.a.token",
        "two parts": f"{h}.{p}",
        "too long": good + "A" * 5000,
        "tampered payload": f"{h}.{b64({**claims, 'role': 'ops'})}.{s}",
        "tampered signature": f"{h}.{p}.{s[:-4]}{'AAAA' if not s.endswith('AAAA') else 'BBBB'}",
        "wrong secret": signed(claims, secret="another-secret-0123456789abcdef-xyz"),
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({**claims, 'role': 'ops'})}.",
        "HS512": jwt.encode(claims, SECRET, algorithm="HS512"),
        "expired": signed({**claims, "exp": now - 1}),
        "iat in the future": signed({**claims, "iat": now + 3600}),
        "iat a string": signed({**claims, "iat": "soon"}),
        "iat a float": signed({**claims, "iat": float(now)}),
        "exp a float": signed({**claims, "exp": float(now + 60)}),
        "role null": signed({**claims, "role": None}),
        "role unknown": signed({**claims, "role": "admin"}),
        "no sub": signed({k: v for k, v in claims.items() if k != "sub"}),
        "sub a number": signed({**claims, "sub": 7}),
        "sub empty": signed({**claims, "sub": ""}),
        "sub too long": signed({**claims, "sub": "x" * 65}),
        "jti a number": signed({**claims, "jti": 5}),
        "rooms not a list": signed({**claims, "rooms": "r1"}),
        "audience": signed({**claims, "aud": "someone"}),
        "not before, future": signed({**claims, "nbf": now + 3600}),
        "extra claim": signed({**claims, "colour": "blue"}),
        "header with kid": signed(claims, header={"kid": "k1"}),
        "padded": f"{h}.{p}.{s}==",
        "payload a list": f"{h}.{b64([1, 2])}.{s}",
    }


def test_every_crafted_token_gets_the_reference_verdict() -> None:
    now = int(time.time())
    v = TokenVerifier(SECRET)
    tokens = crafted(now)
    for name, tok in tokens.items():
        assert verdict(v, tok, now) == reference(SECRET, tok, now), name
    assert isinstance(verdict(v, tokens["good"], now), tuple)
    assert v._checked(str(tokens["good"])) is not None  # ours take the direct path
    assert v._checked(str(tokens["audience"])) is None and v._checked(str(tokens["tampered payload"])) is None
    ident, exp = v.verify(tokens["good"], now_s=now)
    assert (ident.user, ident.role, ident.rooms, exp) == ("alice", "host", ("r1",), now + 600)


def test_a_secret_pyjwt_refuses_as_an_hmac_key_never_takes_the_fast_path() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----"
    now = int(time.time())
    tok = jwt.encode({"sub": "u", "role": "viewer", "iat": now, "exp": now + 60}, "k" * 32, algorithm="HS256")
    v = TokenVerifier(pem)
    assert verdict(v, tok, now) == reference(pem, tok, now)


@settings(max_examples=300, deadline=None)
@given(
    user=st.text(min_size=1, max_size=70),
    role=st.sampled_from([*ROLES, "admin", ""]),
    rooms=st.lists(st.text(max_size=8), max_size=3),
    ttl=st.integers(-100, 5000),
    flip=st.integers(0, 400),
)
def test_issued_and_mangled_tokens_get_the_reference_verdict(user: str, role: str, rooms: list[str], ttl: int,
                                                              flip: int) -> None:
    now = int(time.time())
    claims = {"sub": user, "role": role, "rooms": rooms, "name": user, "iat": now, "exp": now + ttl, "jti": "j"}
    tok = jwt.encode(claims, SECRET, algorithm="HS256")
    mangled = tok[:flip] + ("A" if tok[flip:flip + 1] != "A" else "B") + tok[flip + 1:] if flip < len(tok) else tok
    v = TokenVerifier(SECRET)
    for t in (tok, mangled):
        assert verdict(v, t, now) == reference(SECRET, t, now)


@pytest.mark.parametrize("now_offset", [0, 10_000])
def test_the_caller_clock_decides_expiry(now_offset: int) -> None:
    now = int(time.time())
    tok = issue_token(SECRET, user="u", role="viewer", now_s=now, ttl_s=100)
    assert verdict(TokenVerifier(SECRET), tok, now + now_offset) == reference(SECRET, tok, now + now_offset)
