"""The pure flash-sale rules: reserve decisions, the lifecycle table, campaign definitions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livecommerce.errors import BadFrame, Conflict, wire_error
from livecommerce.flash_sale import (
    SALE_TRANSITIONS,
    BatchBuy,
    InvalidCampaign,
    Sale,
    SaleState,
    SaleStep,
    check_ident,
    decide_reserve,
    decide_reserve_batch,
    load_campaign_file,
    parse_campaigns,
    request_key,
    sale_from_campaign,
    sale_step,
    validate_campaign,
)

SALE = Sale("s", "r", "p", price=100, stock=10, per_user_limit=3, starts_ms=0, ends_ms=10)

GOOD = {
    "id": "s1",
    "room": "r1",
    "product_id": "p1",
    "price": 1999,
    "stock": 100,
    "per_user_limit": 2,
    "starts_ms": 1_000,
    "ends_ms": 61_000,
}


# ------------------------------------------------------------------ decide_reserve


@given(st.integers(0, 5), st.integers(0, 5), st.integers(1, 5), st.integers(-5, 15))
def test_reserve_never_oversells_or_passes_the_user_limit(remaining, bought, qty, now):
    if decide_reserve(SALE, now_ms=now, remaining=remaining, bought=bought, qty=qty) is None:
        assert qty <= remaining
        assert bought + qty <= SALE.per_user_limit
        assert SALE.starts_ms <= now < SALE.ends_ms


@given(
    st.integers(1, 30),
    st.integers(1, 4),
    st.lists(st.tuples(st.integers(0, 9), st.integers(1, 4)), max_size=200),
)
def test_a_run_of_reservations_never_oversells_and_conserves_stock(stock, limit, buys):
    """Replaying decide_reserve as the script does (apply when None) over many buyers."""
    sale = Sale("s", "r", "p", 1, stock, limit, 0, 10)
    remaining, held = stock, dict.fromkeys(range(10), 0)
    for user, qty in buys:
        if decide_reserve(sale, now_ms=5, remaining=remaining, bought=held[user], qty=qty) is None:
            remaining -= qty
            held[user] += qty
        assert remaining >= 0
        assert all(h <= limit for h in held.values())
        assert stock == remaining + sum(held.values())


def test_time_is_judged_before_stock_so_late_buyers_hear_ended():
    assert decide_reserve(SALE, now_ms=10, remaining=0, bought=0, qty=1) == "ended"
    assert decide_reserve(SALE, now_ms=-1, remaining=0, bought=0, qty=1) == "not_started"


def test_stock_is_judged_before_the_user_limit():
    assert decide_reserve(SALE, now_ms=5, remaining=0, bought=3, qty=1) == "sold_out"
    assert decide_reserve(SALE, now_ms=5, remaining=5, bought=3, qty=1) == "limit_reached"


def test_state_overrides_the_window():
    assert (
        decide_reserve(SALE, now_ms=5, remaining=5, bought=0, qty=1, state="scheduled")
        == "not_started"
    )
    assert decide_reserve(SALE, now_ms=5, remaining=5, bought=0, qty=1, state="ended") == "ended"
    assert decide_reserve(SALE, now_ms=5, remaining=5, bought=0, qty=1, state="live") is None


def test_the_last_units_and_the_exact_limit_are_sold():
    assert decide_reserve(SALE, now_ms=9, remaining=3, bought=0, qty=3) is None


# ------------------------------------------------------------------ decide_reserve_batch

batch_buys = st.lists(
    st.builds(lambda u, q, r, now, o: BatchBuy(f"u{u}", q, request_key(f"u{u}", f"r{r}"), now, f"o{o}"),
              st.integers(0, 5), st.integers(1, 4), st.integers(0, 4), st.integers(-2, 12), st.integers(0, 60)),
    max_size=60,
)


@given(st.integers(0, 30), st.integers(1, 4), st.sampled_from(["scheduled", "live", "sold_out", "ended"]), batch_buys,
       st.booleans(), st.booleans())
def test_a_batch_decides_each_buy_as_decide_reserve_alone_in_arrival_order(stock, limit, state, buys, room_closed,
                                                                              room_ended):
    """The group commit changes no answer: replaying the buys one by one (a repeated request
    answers its first order, room_ended from the gate, then decide_reserve, then a taken order
    id) gives the same decisions, units and state."""
    sale = Sale("s", "r", "p", 1, 30, limit, 0, 10)
    decisions, left, after = decide_reserve_batch(sale, buys, state=state, remaining=stock, bought={},
                                                  requests={}, room_closed=room_closed, room_ended=room_ended)
    remaining, held, known, used, st_now = stock, dict[str, int](), dict[str, str](), set[str](), state
    assert len(decisions) == len(buys)
    for b, d in zip(buys, decisions, strict=True):
        if b.request_key in known:
            assert (d.code, d.order_id) == ("dup", known[b.request_key])
            continue
        expected = "room_ended" if room_ended else decide_reserve(
            sale, now_ms=b.now_ms, remaining=remaining, bought=held.get(b.user, 0), qty=b.qty, state=st_now,
            room_closed=room_closed)
        if expected is None and b.order_id in used:
            expected = "order_exists"
        assert d.code == (expected or "ok")
        if expected is None:
            remaining -= b.qty
            held[b.user] = held.get(b.user, 0) + b.qty
            known[b.request_key] = b.order_id
            used.add(b.order_id)
            st_now = "sold_out" if remaining == 0 else st_now
            assert d.order_id == b.order_id
        assert (d.remaining, d.bought) == (remaining, held.get(b.user, 0))
    assert (left, after) == (remaining, st_now)


@given(st.integers(0, 30), st.integers(1, 4), batch_buys)
def test_a_batch_never_oversells_passes_a_limit_or_reserves_a_request_twice(stock, limit, buys):
    sale = Sale("s", "r", "p", 1, 30, limit, 0, 10)
    decisions, left, after = decide_reserve_batch(sale, buys, state="live", remaining=stock, bought={}, requests={})
    made = [(b, d) for b, d in zip(buys, decisions, strict=True) if d.code == "ok"]
    assert left >= 0 and stock == left + sum(b.qty for b, _ in made)
    per_user: dict[str, int] = {}
    for b, _ in made:
        per_user[b.user] = per_user.get(b.user, 0) + b.qty
    assert all(n <= limit for n in per_user.values())
    assert len({b.request_key for b, _ in made}) == len(made) == len({d.order_id for _, d in made})
    assert after == ("sold_out" if made and left == 0 else "live")
    for b, d in zip(buys, decisions, strict=True):  # a repeated request answers the order its first buy made
        if d.code == "dup":
            assert d.order_id in {dd.order_id for bb, dd in made if bb.request_key == b.request_key}


def test_a_request_known_before_the_batch_answers_its_first_order_even_when_the_room_ended():
    rk = request_key("u1", "r1")
    decisions, left, _ = decide_reserve_batch(SALE, [BatchBuy("u1", 1, rk, 5, "new"), BatchBuy("u2", 1, "x", 5, "o2")],
                                              state="live", remaining=5, bought={"u1": 1}, requests={rk: "first"},
                                              room_ended=True)
    assert [(d.code, d.order_id) for d in decisions] == [("dup", "first"), ("room_ended", None)] and left == 5


# ------------------------------------------------------------------ lifecycle

STATES: tuple[SaleState, ...] = ("scheduled", "live", "sold_out", "ended")
STEPS: tuple[SaleStep, ...] = ("start", "sell_out", "restock", "end")


def test_the_lifecycle_follows_the_table():
    assert sale_step("scheduled", "start") == "live"
    assert sale_step("live", "sell_out") == "sold_out"
    assert sale_step("sold_out", "restock") == "live"
    assert sale_step("sold_out", "end") == "ended"
    assert sale_step("live", "end") == "ended"
    assert sale_step("scheduled", "end") == "ended"


def test_reapplying_a_step_that_happened_is_a_noop():
    assert sale_step("live", "start") is None
    assert sale_step("ended", "end") is None


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("step", STEPS)
def test_every_pair_is_a_transition_a_noop_or_a_conflict(state, step):
    try:
        nxt = sale_step(state, step)
    except Conflict as exc:
        assert (state, step) not in SALE_TRANSITIONS
        assert exc.code == "illegal_transition"
        assert wire_error(exc).http == 409
    else:
        assert nxt == SALE_TRANSITIONS.get((state, step))


def test_an_ended_sale_cannot_start_again():
    with pytest.raises(Conflict):
        sale_step("ended", "start")
    with pytest.raises(Conflict):
        sale_step("scheduled", "sell_out")


# ------------------------------------------------------------------ campaign definitions


def test_a_valid_campaign_is_normalised():
    c = validate_campaign(GOOD)
    assert c["payment_window_s"] == 900 and c["restock_on_refund"] is False
    assert c["product_name"] is None
    s = sale_from_campaign(GOOD)
    assert s == Sale("s1", "r1", "p1", 1999, 100, 2, 1_000, 61_000, 900, False)


def test_iso_times_and_duration_are_accepted():
    d = {k: v for k, v in GOOD.items() if not k.endswith("_ms")}
    c = validate_campaign({**d, "starts_at": "2025-06-01T20:00:00+08:00", "duration_s": 600})
    assert c["starts_ms"] == 1748779200000
    assert c["ends_ms"] == c["starts_ms"] + 600_000
    z = validate_campaign(
        {**d, "starts_at": "2025-06-01T12:00:00Z", "ends_at": "2025-06-01T12:10:00"}
    )
    assert z["starts_ms"] == 1748779200000 and z["ends_ms"] == 1748779800000


def test_a_missing_id_is_minted_by_the_caller():
    d = {k: v for k, v in GOOD.items() if k != "id"}
    assert sale_from_campaign(d, sale_id="minted").id == "minted"
    with pytest.raises(InvalidCampaign) as e:
        sale_from_campaign(d)
    assert e.value.field == "id"


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"stock": 0}, "stock", "between 1"),
        ({"stock": "100"}, "stock", "integer"),
        ({"stock": True}, "stock", "integer"),
        ({"price": -1}, "price", "between 0"),
        ({"price": 19.99}, "price", "cents"),
        ({"per_user_limit": 0}, "per_user_limit", "between 1"),
        ({"room": None}, "room", "required"),
        ({"room": "r{1}"}, "room", "letters"),
        ({"product_id": ""}, "product_id", "non-empty"),
        ({"ends_ms": 1_000}, "ends_ms", "after the start"),
        ({"starts_ms": None}, "starts_at", "required"),
        ({"starts_ms": None, "starts_at": "tomorrow"}, "starts_at", "ISO-8601"),
        ({"duration_s": 5}, "duration_s", "not both"),
        ({"payment_window_s": 0}, "payment_window_s", "between 1"),
        ({"restock_on_refund": "yes"}, "restock_on_refund", "true or false"),
        ({"per_user_limt": 2}, "per_user_limt", "unknown field"),
    ],
)
def test_an_invalid_campaign_names_the_bad_field(change, field, words):
    with pytest.raises(InvalidCampaign) as e:
        validate_campaign({**GOOD, **change})
    assert e.value.field == field
    assert words in str(e.value)
    assert str(e.value).startswith(field + ":")
    # usable as both: an error frame / HTTP 400, and a ValueError for plain Python callers
    assert isinstance(e.value, BadFrame) and isinstance(e.value, ValueError)
    assert wire_error(e.value).http == 400 and wire_error(e.value).code == "invalid_campaign"


def test_campaign_yaml_file_with_a_list_under_campaigns(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text(
        """
campaigns:
  - id: s1
    room: r1
    product_id: p1
    product_name: Tea set
    price: 1999
    stock: 100
    starts_at: 2025-06-01T20:00:00+08:00
    ends_at: 2025-06-01T20:30:00+08:00
    restock_on_refund: true
  - room: 42
    product_id: p2
    price: 500
    stock: 5
    per_user_limit: 1
    starts_ms: 1000
    duration_s: 60
"""
    )
    out = load_campaign_file(f, default_payment_window_s=300)
    assert [c["id"] for c in out] == ["s1", None]
    assert out[0]["product_name"] == "Tea set" and out[0]["restock_on_refund"] is True
    assert out[0]["ends_ms"] - out[0]["starts_ms"] == 30 * 60_000
    assert out[1]["room"] == "42" and out[1]["ends_ms"] == 61_000
    assert {c["payment_window_s"] for c in out} == {300}


def test_campaign_json_file_with_one_definition(tmp_path: Path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps(GOOD))
    assert load_campaign_file(f) == [validate_campaign(GOOD)]


def test_a_bad_item_in_a_file_is_named_with_its_position(tmp_path: Path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps([GOOD, {**GOOD, "id": "s2", "stock": -5}]))
    with pytest.raises(InvalidCampaign) as e:
        load_campaign_file(f)
    assert e.value.field == "campaigns[1].stock"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[1, 2", "file"),
        ("[]", "campaigns"),
        ("just text", "campaigns"),
        ("campaigns: []\nextra: 1", "extra"),
    ],
)
def test_a_malformed_document_is_rejected_clearly(text, field):
    with pytest.raises(InvalidCampaign) as e:
        parse_campaigns(text)
    assert e.value.field == field


def test_duplicate_ids_in_one_file_are_rejected():
    with pytest.raises(InvalidCampaign) as e:
        parse_campaigns(json.dumps([GOOD, GOOD]), fmt="json")
    assert e.value.field == "campaigns[1].id"


def test_an_unreadable_file_is_reported_as_such(tmp_path: Path):
    with pytest.raises(InvalidCampaign) as e:
        load_campaign_file(tmp_path / "missing.yaml")
    assert e.value.field == "file"


def test_ids_that_would_break_a_redis_hash_tag_are_refused():
    assert check_ident("sale-1:a_b.c", "sale_id") == "sale-1:a_b.c"
    for bad in ("a}b", "{a", "", "é", "x" * 65, 5):
        with pytest.raises(BadFrame):
            check_ident(bad, "sale_id")


def test_the_core_imports_no_io_library():
    import ast

    import livecommerce.flash_sale as fs
    import livecommerce.orders as orders

    for mod in (fs, orders):
        tree = ast.parse(Path(mod.__file__).read_text())
        names = {
            a.name.split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.Import)
            for a in n.names
        }
        names |= {
            (n.module or "").split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.level == 0
        }
        assert not names & {"asyncio", "redis", "sqlalchemy", "aiohttp", "aiokafka"}, mod.__name__


@given(st.integers(0, 10**12), st.integers(1, 10**9), st.integers(0, 10**12))
def test_an_early_start_keeps_the_sales_length_and_a_late_one_changes_nothing(starts: int, length: int, now: int) -> None:
    from livecommerce.flash_sale import early_window

    s, e = early_window(starts, starts + length, now)
    if now < starts:
        assert (s, e - s) == (now, length)
    else:
        assert (s, e) == (starts, starts + length)
