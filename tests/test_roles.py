"""The one role check (``Identity.is_ops`` / ``require_ops`` / ``require_self_or_ops`` /
``require_host``) and the one listing parser (``gateway.validation.page``)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.validation import page
from livecommerce.auth import Identity
from livecommerce.errors import BadFrame, Forbidden

OPS = Identity("o", "ops")
HOST = Identity("h", "host", rooms=("r1",))
VIEWER = Identity("v", "viewer")


def test_only_the_ops_role_is_ops() -> None:
    assert OPS.is_ops and not HOST.is_ops and not VIEWER.is_ops
    OPS.require_ops()
    for who in (HOST, VIEWER):
        with pytest.raises(Forbidden):
            who.require_ops()


def test_what_belongs_to_a_user_is_theirs_and_ops_alone() -> None:
    VIEWER.require_self_or_ops("v")
    OPS.require_self_or_ops("v")
    for who in (HOST, VIEWER):
        with pytest.raises(Forbidden):
            who.require_self_or_ops("someone-else")


def test_ops_run_every_room_and_a_host_the_rooms_of_the_token() -> None:
    assert OPS.may_host("any") and HOST.may_host("r1")
    assert not HOST.may_host("r2") and not VIEWER.may_host("r1")
    with pytest.raises(Forbidden):
        HOST.require_host("r2")


@pytest.mark.parametrize(("query", "want"), [
    ("", (100, 0)),
    ("?limit=20&offset=40", (20, 40)),
    ("?limit=0&offset=-5", (1, 0)),  # clamped, not refused
    ("?limit=100000", (500, 0)),
])
def test_a_listing_page_is_clamped(query: str, want: tuple[int, int]) -> None:
    assert page(make_mocked_request("GET", f"/api/v1/refunds{query}")) == want


def test_a_page_that_is_not_numbers_is_invalid() -> None:
    with pytest.raises(BadFrame) as e:
        page(make_mocked_request("GET", "/api/v1/refunds?limit=ten"))
    assert e.value.code == "invalid"
