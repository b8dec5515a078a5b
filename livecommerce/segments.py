"""Segments: a small JSON rule language over profile fields, validated and evaluated. No I/O.

A rule is one JSON value::

    rule := {"and": [rule, ...]}            every one holds (1..50 items)
          | {"or":  [rule, ...]}            at least one holds
          | {"not": rule}
          | {"field": NAME, "op": OP, "value": VALUE}

Fields are those of :func:`livecommerce.profiles.view` (:data:`FIELDS` gives each one's
type); ``rfm.r``, ``rfm.f``, ``rfm.m`` and ``rfm.score`` reach into the RFM scores, and
``intimacy.<host>`` / ``category_spend.<category>`` into those maps (0 when absent).

=================  ==============================================  =========================
field type         operators                                        value
=================  ==============================================  =========================
number             ``eq ne lt lte gt gte``                          a number
                   ``in not_in``                                    a list of numbers
string             ``eq ne``, ``in not_in``                         a string / list of them
list (of strings)  ``contains``                                     a string
                   ``contains_any contains_all``                    a list of strings
every type         ``exists``                                       true / false
=================  ==============================================  =========================

A field whose value is unknown (``recency_days`` of a viewer never seen active) makes every
comparison false; ``{"op": "exists", "value": false}`` selects those. ``stage`` values are
checked against the lifecycle stages. Lists hold at most 1,000 values, a rule at most 200
nodes and 12 levels.

Validation (:func:`parse_rule`) stops at the first problem and raises :class:`RuleError`,
whose ``pointer`` is the JSON pointer (RFC 6901) of the bad part, e.g. ``/and/1/field`` for
a misspelt field in the second item of an ``and``, and whose message says what is wrong there
(``unknown field 'spnd' (did you mean 'spend'?)``).

Example: mature or growing viewers who spent over 100.00 on tea and follow host ``h1``::

    {"and": [{"field": "stage", "op": "in", "value": ["mature", "growing"]},
             {"field": "category_spend.tea", "op": "gt", "value": 10000},
             {"field": "hosts_followed", "op": "contains", "value": "h1"}]}
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BadFrame
from .profiles import STAGES

NUMBER, STRING, LIST = "number", "string", "list"

FIELDS: dict[str, str] = {
    **{
        name: NUMBER
        for name in (
            "tenure_days", "recency_days", "active_days", "active_days_30", "watch_min", "comments",
            "gifts", "gift_value", "reserved", "cancelled", "orders", "frequency", "spend", "refunded",
            "monetary", "aov", "order_recency_days", "refund_requests", "refunds", "coupons_used",
            "coupon_discount", "topups", "topup_coins", "max_intimacy", "first_seen_ms", "last_seen_ms",
            "first_order_ms", "last_order_ms", "rfm.r", "rfm.f", "rfm.m",
        )
    },
    **{name: STRING for name in ("stage", "top_category", "rfm.score", "user_id")},
    **{name: LIST for name in ("categories", "hosts_followed", "fan_clubs", "top_hosts")},
}
MAP_FIELDS = {"intimacy": NUMBER, "category_spend": NUMBER}  # intimacy.<host>, category_spend.<cat>

OPS: dict[str, frozenset[str]] = {
    NUMBER: frozenset({"eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "exists"}),
    STRING: frozenset({"eq", "ne", "in", "not_in", "exists"}),
    LIST: frozenset({"contains", "contains_any", "contains_all", "exists"}),
}
MAX_LIST = 1000
MAX_NODES = 200
MAX_DEPTH = 12
MAX_ITEMS = 50


class RuleError(BadFrame, ValueError):
    """A segment rule is invalid. ``pointer`` is the JSON pointer of the bad part ("" for the
    whole rule); the message starts with it."""

    code = "invalid_rule"

    def __init__(self, pointer: str, problem: str) -> None:
        super().__init__(f"at {pointer or '/'}: {problem}")
        self.pointer = pointer
        self.problem = problem


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Rule


@dataclass(frozen=True, slots=True)
class Cmp:
    field: str
    kind: str
    op: str
    value: Any


Rule = And | Or | Not | Cmp


def field_kind(name: str) -> str | None:
    """The type of ``name`` (``intimacy.<host>`` and ``category_spend.<c>`` included)."""
    if name in FIELDS:
        return FIELDS[name]
    head, dot, rest = name.partition(".")
    if dot and rest and head in MAP_FIELDS:
        return MAP_FIELDS[head]
    return None


def _esc(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def parse_rule(obj: Any) -> Rule:
    """Validate a rule (see the module docstring) and compile it.

    Raises:
        RuleError: (a ``BadFrame``, code ``invalid_rule``) with the pointer of the first
            bad part.
    """
    count = [0]
    return _parse(obj, "", 0, count)


def _parse(obj: Any, at: str, depth: int, count: list[int]) -> Rule:
    count[0] += 1
    if count[0] > MAX_NODES:
        raise RuleError(at, f"the rule has more than {MAX_NODES} nodes")
    if depth > MAX_DEPTH:
        raise RuleError(at, f"the rule is nested deeper than {MAX_DEPTH} levels")
    if not isinstance(obj, Mapping):
        raise RuleError(at, 'a rule must be an object: {"and": [...]}, {"or": [...]}, {"not": {...}} or {"field", "op", "value"}')
    logic = [k for k in ("and", "or", "not") if k in obj]
    if len(logic) > 1:
        raise RuleError(f"{at}/{logic[1]}", f"'{logic[0]}' and '{logic[1]}' cannot share an object: nest them")
    if logic:
        key = logic[0]
        extra = sorted(str(k) for k in obj if k != key)
        if extra:
            raise RuleError(f"{at}/{_esc(extra[0])}", f"unexpected key beside '{key}'")
        sub = obj[key]
        if key == "not":
            return Not(_parse(sub, f"{at}/not", depth + 1, count))
        if not isinstance(sub, list) or not sub:
            raise RuleError(f"{at}/{key}", f"'{key}' takes a non-empty list of rules")
        if len(sub) > MAX_ITEMS:
            raise RuleError(f"{at}/{key}", f"'{key}' takes at most {MAX_ITEMS} rules")
        items = tuple(_parse(x, f"{at}/{key}/{i}", depth + 1, count) for i, x in enumerate(sub))
        return And(items) if key == "and" else Or(items)
    for k in ("field", "op", "value"):
        if k not in obj:
            known = ", ".join(sorted(str(x) for x in obj)) or "nothing"
            raise RuleError(at, f"missing '{k}' (a comparison needs field, op and value; got {known})")
    extra = sorted(str(k) for k in obj if k not in ("field", "op", "value"))
    if extra:
        raise RuleError(f"{at}/{_esc(extra[0])}", "unexpected key in a comparison (field, op, value)")
    name = obj["field"]
    kind = field_kind(name) if isinstance(name, str) else None
    if kind is None:
        hint = ""
        if isinstance(name, str):
            close = difflib.get_close_matches(name, list(FIELDS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise RuleError(f"{at}/field", f"unknown field {name!r}{hint}")
    op = obj["op"]
    if op not in OPS[kind]:
        raise RuleError(f"{at}/op", f"{op!r} does not apply to {kind} field '{name}' (use {', '.join(sorted(OPS[kind]))})")
    value = _check_value(name, kind, op, obj["value"], f"{at}/value")
    return Cmp(name, kind, op, value)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_value(name: str, kind: str, op: str, v: Any, at: str) -> Any:
    if op == "exists":
        if not isinstance(v, bool):
            raise RuleError(at, "'exists' takes true or false")
        return v
    many = op in ("in", "not_in", "contains_any", "contains_all")
    want_num = kind == NUMBER
    if many:
        if not isinstance(v, list) or not v:
            raise RuleError(at, f"'{op}' takes a non-empty list")
        if len(v) > MAX_LIST:
            raise RuleError(at, f"'{op}' takes at most {MAX_LIST} values")
        for i, x in enumerate(v):
            _check_scalar(name, want_num, x, f"{at}/{i}")
        return tuple(v)
    _check_scalar(name, want_num, v, at)
    return v


def _check_scalar(name: str, want_num: bool, x: Any, at: str) -> None:
    if want_num and not _is_num(x):
        raise RuleError(at, f"'{name}' is a number: compare it with a number, not {x!r}")
    if not want_num and not isinstance(x, str):
        raise RuleError(at, f"'{name}' holds text: compare it with a string, not {x!r}")
    if name == "stage" and x not in STAGES:
        raise RuleError(at, f"{x!r} is no lifecycle stage ({', '.join(STAGES)})")


def lookup(view: Mapping[str, Any], name: str) -> Any:
    """The value of field ``name`` in a profile view (None when unknown)."""
    if name in view:
        return view[name]
    head, _, rest = name.partition(".")
    sub = view.get(head)
    if isinstance(sub, Mapping):
        return sub.get(rest, 0 if head in MAP_FIELDS else None)
    return None


def evaluate(rule: Rule, view: Mapping[str, Any]) -> bool:
    """Whether a profile view satisfies a compiled rule."""
    if isinstance(rule, And):
        return all(evaluate(r, view) for r in rule.items)
    if isinstance(rule, Or):
        return any(evaluate(r, view) for r in rule.items)
    if isinstance(rule, Not):
        return not evaluate(rule.item, view)
    v = lookup(view, rule.field)
    op, want = rule.op, rule.value
    if op == "exists":
        return bool((v is not None) == want)
    if v is None:
        return False
    if rule.kind == LIST:
        have = set(v)
        if op == "contains":
            return want in have
        if op == "contains_any":
            return bool(have & set(want))
        return set(want) <= have
    if op == "eq":
        return bool(v == want)
    if op == "ne":
        return bool(v != want)
    if op == "in":
        return bool(v in want)
    if op == "not_in":
        return bool(v not in want)
    if op == "lt":
        return bool(v < want)
    if op == "lte":
        return bool(v <= want)
    if op == "gt":
        return bool(v > want)
    return bool(v >= want)


@dataclass(frozen=True, slots=True)
class SegmentDef:
    id: str
    name: str
    rule: Any  # the JSON as given (validated)


def parse_segment(body: Any, *, default_id: str) -> SegmentDef:
    """Validate ``POST /api/v1/segments {id?, name, rule}``.

    Raises:
        BadFrame: (``invalid``) bad id or name. RuleError: a bad rule (pointer relative
            to the rule, e.g. ``/and/0/op``).
    """
    if not isinstance(body, Mapping):
        raise BadFrame("body must be {name, rule}", code="invalid")
    sid = body.get("id", default_id)
    if not isinstance(sid, str) or not 0 < len(sid) <= 48 or not all(c.isalnum() or c in "-_." for c in sid):
        raise BadFrame("'id' must be 1..48 letters, digits, - _ .", code="invalid")
    name = body.get("name", sid)
    if not isinstance(name, str) or not 0 < len(name) <= 200:
        raise BadFrame("'name' must be 1..200 characters", code="invalid")
    if "rule" not in body:
        raise RuleError("", "missing 'rule'")
    parse_rule(body["rule"])
    return SegmentDef(sid, name, body["rule"])
