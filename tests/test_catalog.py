"""The catalogue's pure rules: definitions, changes, file formats, stock and holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livecommerce.catalog import (
    MAX_QTY,
    HoldState,
    InvalidProduct,
    SkuPatch,
    SkuStock,
    add_sku,
    decide_reserve,
    decide_stock,
    hold_step,
    may_manage,
    merge_lines,
    parse_catalog_csv,
    parse_catalog_yaml,
    patch_product,
    patch_sku,
    plan_change,
    validate_product,
    validate_sku,
    validate_sku_patch,
)
from livecommerce.errors import BadFrame, Conflict

TEE: dict[str, Any] = {
    "id": "tee",
    "name": "Cotton tee",
    "category": "Clothing",
    "skus": [
        {"attrs": {"colour": "red", "size": "M"}, "price": 1999, "stock": 5},
        {"attrs": {"colour": "red", "size": "L"}, "price": 2099},
        {"id": "blue-m", "attrs": {"colour": "blue", "size": "M"}, "price": 1999, "stock": 0, "image": "https://img.example/b.jpg"},
    ],
}


def test_a_product_of_one_price_is_one_default_sku() -> None:
    d = validate_product({"name": " Tea set ", "price": 1999, "category": "Home", "image": "/static/tea.png"}, owner="h1",
                         default_id="p1")
    p = d.product
    assert (p.id, p.owner, p.name, p.category, p.image) == ("p1", "h1", "Tea set", "home", "/static/tea.png")
    assert [(s.id, s.attrs, s.price) for s in p.skus] == [("default", (), 1999)]
    assert d.stock == {} and p.options == () and p.price_range == (1999, 1999)


def test_skus_make_the_options_and_their_ids_from_the_attrs() -> None:
    d = validate_product(TEE, owner="h1")
    p = d.product
    assert [s.id for s in p.skus] == ["red-M", "red-L", "blue-m"]
    assert p.options == (("colour", ("red", "blue")), ("size", ("M", "L")))
    assert d.stock == {"red-M": 5, "blue-m": 0}
    assert p.price_range == (1999, 2099)
    out = p.to_dict()
    assert out["options"] == [{"name": "colour", "values": ["red", "blue"]}, {"name": "size", "values": ["M", "L"]}]
    assert out["price"] == 1999 and out["skus"][2]["image"] == "https://img.example/b.jpg"


def test_attr_values_that_make_no_id_number_the_sku() -> None:
    d = validate_product({"id": "mug", "name": "Mug", "skus": [{"attrs": {"颜色": "红色"}, "price": 100},
                                                               {"attrs": {"颜色": "蓝色"}, "price": 100}]})
    assert [s.id for s in d.product.skus] == ["sku1", "sku2"]


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"price": 10}, "name", "1..200"),
    ({"name": "x"}, "price", "required"),
    ({"name": "x", "price": -1}, "price", "between 0"),
    ({"name": "x", "price": 19.99}, "price", "integer cents"),
    ({"name": "x", "price": True}, "price", "integer cents"),
    ({"name": "x", "price": 1, "colour": "red"}, "colour", "unknown field"),
    ({"name": "x", "price": 1, "image": "javascript:alert(1)"}, "image", "http(s) URL"),
    ({"name": "x", "price": 1, "id": "a{b}"}, "id", "letters, digits"),
    ({"name": "x", "price": 1, "skus": [{"price": 1}]}, "price", "per SKU"),
    ({"name": "x", "skus": []}, "skus", "at least one"),
    ({"name": "x", "skus": [{"price": 1}, {"price": 2}]}, "skus[1].attrs", "tells them apart"),
    ({"name": "x", "skus": [{"attrs": {"c": "r"}, "price": 1}, {"attrs": {"s": "M"}, "price": 1}]}, "skus[1].attrs", "must name"),
    ({"name": "x", "skus": [{"attrs": {"c": "r"}, "price": 1}, {"attrs": {"c": "r"}, "price": 2, "id": "o"}]}, "skus[1].attrs",
     "already another SKU"),
    ({"name": "x", "skus": [{"id": "a", "attrs": {"c": "r"}, "price": 1}, {"id": "a", "attrs": {"c": "b"}, "price": 1}]},
     "skus[1].id", "duplicate"),
    ({"name": "x", "skus": [{"attrs": {"c": "r"}, "price": 1, "stock": -2}]}, "skus[0].stock", "between 0"),
    ({"name": "x", "owner": "has space", "price": 1}, "owner", "user id"),
    ({"name": "x\x00", "price": 1}, "name", "control"),
])
def test_a_bad_definition_names_the_field_and_the_fix(body: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InvalidProduct) as e:
        validate_product(body, default_id="p")
    assert e.value.field == field and words in e.value.problem and e.value.code == "invalid"
    assert isinstance(e.value, BadFrame)


def test_patches_change_what_they_name_and_state_moves_by_the_table() -> None:
    p = validate_product(TEE, owner="h1").product
    q = patch_product(p, {"name": "Tee", "category": "TOPS", "state": "archived"})
    assert (q.name, q.category, q.state, q.skus) == ("Tee", "tops", "archived", p.skus)
    assert patch_product(q, {"state": "active"}).state == "active"
    with pytest.raises(InvalidProduct):
        patch_product(p, {})
    with pytest.raises(InvalidProduct):
        patch_product(p, {"price": 1})
    r = patch_sku(p, "red-L", SkuPatch(price=1500, state="archived"))
    assert r.sku("red-L") is not None and (r.sku("red-L").price, r.sku("red-L").state) == (1500, "archived")  # type: ignore[union-attr]
    assert r.price_range == (1999, 1999)  # archived SKUs do not count
    with pytest.raises(KeyError):
        patch_sku(p, "nope", SkuPatch(price=1))


def test_a_sku_patch_takes_one_stock_form() -> None:
    assert validate_sku_patch({"add_stock": -3}).add_stock == -3
    assert validate_sku_patch({"stock": 7, "price": 5}) == SkuPatch(price=5, stock=7)
    with pytest.raises(InvalidProduct) as e:
        validate_sku_patch({"stock": 1, "add_stock": 1})
    assert e.value.field == "add_stock"
    with pytest.raises(InvalidProduct):
        validate_sku_patch({"colour": "red"})


def test_adding_a_sku_keeps_the_rules_of_the_others() -> None:
    p = validate_product(TEE).product
    sku, n = validate_sku({"attrs": {"colour": "green", "size": "M"}, "price": 1, "stock": 3})
    assert n == 3 and add_sku(p, sku).options[0][1] == ("red", "blue", "green")
    dup, _ = validate_sku({"attrs": {"colour": "red", "size": "M"}, "price": 1, "id": "x"})
    with pytest.raises(InvalidProduct):
        add_sku(p, dup)
    odd, _ = validate_sku({"attrs": {"colour": "green"}, "price": 1})
    with pytest.raises(InvalidProduct):
        add_sku(p, odd)


def test_who_manages_a_product() -> None:
    assert may_manage("h1", user="h1", role="host")
    assert not may_manage("h1", user="h2", role="host")
    assert not may_manage("", user="h1", role="host")  # platform products are ops'
    assert may_manage("h1", user="o", role="ops") and may_manage("", user="o", role="ops")
    assert not may_manage("h1", user="h1", role="viewer")


# ------------------------------------------------------------------ loading a definition again


def test_loading_the_same_definition_again_changes_nothing() -> None:
    d = validate_product(TEE, owner="h1")
    new, ch = plan_change(None, d)
    assert ch.created and ch.changed and ch.stock == (("red-M", None, 5), ("red-L", None, 0), ("blue-m", None, 0))
    again, ch2 = plan_change(new, d, available={"red-M": 2, "red-L": 0, "blue-m": 0})
    assert not ch2.changed and again.definition() == new.definition()


def test_a_reload_changes_prices_adds_skus_and_sets_stock_only_when_asked() -> None:
    old = validate_product(TEE, owner="h1").product
    body = {**TEE, "skus": [{**TEE["skus"][0], "price": 1899, "stock": 9}, {"attrs": {"colour": "red", "size": "S"}, "price": 1, "stock": 4}]}
    new, ch = plan_change(old, validate_product(body, owner="h1"), available={"red-M": 2})
    assert [s.id for s in new.skus] == ["red-M", "red-L", "blue-m", "red-S"]  # unlisted SKUs stay
    assert ch.lines == ("sku red-M: price 1999 -> 1899", "sku red-S: new, colour=red, size=S, 1 cents")
    assert ch.stock == (("red-S", None, 4),)  # red-M keeps its 2
    _, ch = plan_change(old, validate_product(body, owner="h1"), available={"red-M": 2}, set_stock=True)
    assert ch.stock == (("red-M", 2, 9), ("red-S", None, 4))


# ------------------------------------------------------------------ files


def test_a_csv_file_makes_products_from_sku_rows() -> None:
    text = ("product_id,name,category,sku,price,stock,option:colour,option:size\n"
            "tee,Cotton tee,clothing,,1999,5,red,M\n"
            "tee,,,,2099,,red,L\n"
            "\n"
            "mug,Mug,home,m1,900,10,,\n")
    drafts = parse_catalog_csv(text)
    assert [d.product.id for d in drafts] == ["tee", "mug"]
    assert [s.id for s in drafts[0].product.skus] == ["red-M", "red-L"] and drafts[0].stock == {"red-M": 5}
    assert drafts[1].product.skus[0].id == "m1" and drafts[1].stock == {"m1": 10}


@pytest.mark.parametrize(("text", "where"), [
    ("product_id,name,price,colour\n", "row 1: unknown column 'colour'"),
    ("product_id,name\n", "row 1: the column 'price' is required"),
    ("product_id,name,price\ntee,Tee,abc\n", "row 2 (tee/default): price: must be integer cents"),
    ("product_id,name,price,sku\ntee,Tee,1,a\ntee,Other,1,b\n", "row 3 (tee/b): name: 'Other' differs from 'Tee' on row 2"),
    ("product_id,name,price,option:c\ntee,Tee,1,r\ntee,,2,r\n", "row 3 (tee/r): attrs: {'c': 'r'} is already another SKU"),
    ("product_id,name,price\n,Tee,1\n", "row 2: product_id is empty"),
    ("product_id,name,price\ntee,Tee,1,2\n", "row 2: has 4 cells"),
])
def test_a_bad_csv_row_is_named_with_what_to_fix(text: str, where: str) -> None:
    with pytest.raises(InvalidProduct) as e:
        parse_catalog_csv(text)
    assert str(e.value).startswith(where), str(e.value)


def test_a_yaml_file_names_the_bad_entry() -> None:
    assert [d.product.id for d in parse_catalog_yaml("products:\n- {id: a, name: A, price: 1}\n- {id: b, name: B, price: 2}\n")] == ["a", "b"]
    with pytest.raises(InvalidProduct) as e:
        parse_catalog_yaml("products:\n- {id: a, name: A, price: 1}\n- {id: b, name: B, skus: [{price: x}]}\n")
    assert e.value.field == "products[1].skus[0].price"
    with pytest.raises(InvalidProduct) as e:
        parse_catalog_yaml("products:\n- {id: a, name: A, price: 1}\n- {id: a, name: B, price: 2}\n")
    assert "listed twice" in str(e.value)
    with pytest.raises(InvalidProduct) as e:
        parse_catalog_yaml("[unclosed")
    assert e.value.field == "file"


def test_the_example_catalogue_loads() -> None:
    from livecommerce.catalog import load_catalog_file

    root = Path(__file__).resolve().parents[1] / "examples"
    for name in ("catalog.yaml", "catalog.csv"):
        drafts = load_catalog_file(root / name)
        assert drafts and all(d.product.skus for d in drafts), name


# ------------------------------------------------------------------ stock and holds


def test_lines_are_merged_per_sku_and_bounded() -> None:
    assert merge_lines([("a", 1), ("b", 2), ("a", 3)]) == (("a", 4), ("b", 2))
    for bad in ([], [("a", 0)], [("a", MAX_QTY), ("a", 1)], [("a{", 1)], [("a", True)]):
        with pytest.raises(BadFrame):
            merge_lines(bad)


SKUS = st.dictionaries(st.sampled_from(["a", "b", "c"]), st.tuples(st.booleans(), st.integers(0, 6)), max_size=3)
LINES = st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.integers(1, 5)), min_size=1, max_size=4)


@settings(max_examples=300)
@given(state=st.sampled_from([None, "active", "archived"]), skus=SKUS, lines=LINES)
def test_a_reservation_is_all_or_nothing_and_never_oversells(state: Any, skus: dict[str, tuple[bool, int]],
                                                             lines: list[tuple[str, int]]) -> None:
    merged = merge_lines(lines)
    got = decide_reserve(state, skus, merged)
    if got is None:
        assert state == "active"
        assert all(s in skus and not skus[s][0] and q <= skus[s][1] for s, q in merged)
    else:
        reason, sku = got
        assert (reason in ("no_product", "archived")) == (sku is None)
        if reason == "sold_out":
            assert sku is not None and dict(merged)[sku] > skus[sku][1]


@given(state=st.sampled_from(["reserved", "paid", "cancelled"]), step=st.sampled_from(["pay", "release"]),
       late=st.booleans())
def test_every_hold_step_has_an_answer_and_only_a_reserved_hold_moves(state: HoldState, step: Any, late: bool) -> None:
    to, outcome = hold_step(state, step, now_ms=10 if late else 1, pay_by_ms=5)
    if state != "reserved":
        assert to == state and outcome.startswith("already_")
    elif step == "pay" and late:
        assert (to, outcome) == ("reserved", "expired")
    else:
        assert (to, outcome) == (("paid", "paid") if step == "pay" else ("cancelled", "released"))


OPS = st.lists(st.one_of(
    st.tuples(st.just("reserve"), st.integers(1, 4)),
    st.tuples(st.just("pay"), st.integers(0, 9)),
    st.tuples(st.just("release"), st.integers(0, 9)),
    st.tuples(st.just("set"), st.integers(0, 12)),
    st.tuples(st.just("add"), st.integers(-6, 6)),
), max_size=40)


@settings(max_examples=200)
@given(ops=OPS)
def test_stock_is_conserved_through_any_mix_of_holds_and_owner_changes(ops: list[tuple[str, int]]) -> None:
    """The model the scripts implement, run on the pure rules alone."""
    units = SkuStock()
    holds: list[list[Any]] = []  # [qty, state]
    for op, n in ops:
        if op == "reserve":
            if decide_reserve("active", {"a": (False, units.available)}, [("a", n)]) is None:
                units = SkuStock(units.available - n, units.reserved + n, units.sold, units.stocked)
                holds.append([n, "reserved"])
        elif op in ("pay", "release") and holds:
            h = holds[n % len(holds)]
            to, outcome = hold_step(h[1], "pay" if op == "pay" else "release", now_ms=0, pay_by_ms=1)
            if outcome == "paid":
                units = SkuStock(units.available, units.reserved - h[0], units.sold + h[0], units.stocked)
            elif outcome == "released":
                units = SkuStock(units.available + h[0], units.reserved - h[0], units.sold, units.stocked)
            h[1] = to
        elif op in ("set", "add"):
            after = decide_stock(units, set_to=n) if op == "set" else decide_stock(units, add=n)
            if after is None:
                assert op == "add" and units.available + n < 0
            else:
                units = after
        assert units.conserved, (ops, units)
        assert units.reserved == sum(q for q, s in holds if s == "reserved")


def test_an_illegal_state_move_is_a_conflict() -> None:
    from livecommerce.catalog import move_state

    assert move_state("active", "archived", what="x") == "archived"
    assert move_state("archived", "archived", what="x") == "archived"
    with pytest.raises(Conflict):
        move_state("active", "gone", what="x")  # type: ignore[arg-type]
