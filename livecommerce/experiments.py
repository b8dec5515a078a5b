"""A/B experiments: definitions, deterministic assignment, flags, and results. No I/O.

An experiment splits viewers between *variants* (the first is the control), each setting
some *flags* (``feed.ranker``, ``coupon.amount``, ``countdown.style`` ...), after an
optional *holdout* that keeps the default experience and is reported beside the variants.

**Assignment** is a pure function of the experiment's salt and the user id
(:func:`bucket`): the first 8 bytes of ``sha256("<salt>:<user>")`` read as an unsigned
integer over 2^64, a uniform number in [0, 1). Below ``holdout`` the user is in the
holdout; above, the rest of the interval is cut in proportion to the variants' weights.
The same user gets the same variant on every gateway and worker, for as long as the
experiment lives (sticky without storing anything); two experiments with different salts
split independently.

**Flags.** At most one running experiment controls a flag (creating or starting a second
one that touches the same flag is a conflict, :func:`check_flag_owners`). A flag read for a
user (:meth:`Book.resolve`) answers the value of that user's variant, or the caller's
default (holdout, a variant that does not set the flag, or no running experiment), and
says which exposure to record.

**Exposures and conversions.** The gateway appends ``experiment.exposure {exp, variant,
user}`` (topic ``growth``, key the user, id :func:`exposure_event_id`, so repeats are one
event) the first time this node shows a user an experiment's flag. Conversions are the
commerce events already on the log (``order.reserved`` = buy, ``order.paid`` = pay, net of
``order.refunded``; ``gift.sent``; ``activity.watch`` minutes) that the growth worker
records per user (``growth_facts``); a user's conversions count from their first exposure
until the experiment stopped.

**Results** (:func:`results`) per variant: exposed viewers, conversion rate (paid at
least once) with its Wilson interval, GMV per viewer with its normal interval, buy, gift
and watch rates; each treatment against the control: the two-proportion z-test on the
conversion rate and Welch's z on GMV per viewer; and the sample-ratio-mismatch chi-square
of exposure counts against the configured split (holdout included), see
:mod:`livecommerce.experiment_stats`.

Life-cycle (all transitions in :data:`EXPERIMENT_TRANSITIONS`)::

    draft --start--> running --stop--> stopped
      \\------------------stop-----------^
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .errors import BadFrame, Conflict
from .experiment_stats import (
    chi_square_gof,
    mean_summary,
    mean_ztest,
    two_proportion_ztest,
    wilson_interval,
)

ExpState = Literal["draft", "running", "stopped"]
ExpStep = Literal["start", "stop"]

EXPERIMENT_TRANSITIONS: dict[tuple[ExpState, ExpStep], ExpState] = {
    ("draft", "start"): "running",
    ("draft", "stop"): "stopped",
    ("running", "stop"): "stopped",
}

HOLDOUT = "holdout"
EXPOSURE = "experiment.exposure"
MAX_VARIANTS = 10
MAX_HOLDOUT = 0.5
MAX_FLAGS = 20

#: Flags the product reads, with the value everyone gets outside an experiment. An
#: experiment may set other flags too; clients see every flag in ``welcome``.
FLAG_DEFAULTS: dict[str, Any] = {
    "feed.ranker": "popularity",  # popularity | personalised (gateway/feed.py)
    "coupon.amount": 500,  # cents: the newcomer coupon the client offers
    "countdown.style": "digits",  # digits | bar | ring: the flash-sale countdown widget
    "referral.referrer_points": 200,  # points the inviter earns (workers/growth.py)
}

_ID = re.compile(r"^[A-Za-z0-9_-]{1,48}$")
_VARIANT = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_FLAG = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")
Scalar = str | int | float | bool


def bucket(salt: str, user: str) -> float:
    """The user's uniform position in [0, 1) for ``salt`` (see the module docstring)."""
    h = hashlib.sha256(f"{salt}:{user}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    weight: float  # share of the non-holdout traffic, relative to the other variants
    flags: Mapping[str, Scalar] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "flags": dict(self.flags)}


@dataclass(frozen=True, slots=True)
class Experiment:
    id: str
    salt: str
    variants: tuple[Variant, ...]
    holdout: float = 0.0
    state: ExpState = "running"
    description: str = ""
    created_by: str = ""
    created_ms: int = 0
    started_ms: int | None = None
    stopped_ms: int | None = None

    @property
    def control(self) -> Variant:
        return self.variants[0]

    @property
    def flags(self) -> frozenset[str]:
        return frozenset(f for v in self.variants for f in v.flags)

    def split(self) -> dict[str, float]:
        """Each arm's share of all traffic (holdout first when there is one); sums to 1."""
        total = sum(v.weight for v in self.variants)
        out = {HOLDOUT: self.holdout} if self.holdout > 0 else {}
        out.update({v.name: (1.0 - self.holdout) * v.weight / total for v in self.variants})
        return out

    def assign(self, user: str) -> str:
        """The user's arm: :data:`HOLDOUT` or a variant name (pure and sticky)."""
        u = bucket(self.salt, user)
        if u < self.holdout:
            return HOLDOUT
        x = (u - self.holdout) / (1.0 - self.holdout) * sum(v.weight for v in self.variants)
        acc = 0.0
        for v in self.variants:
            acc += v.weight
            if x < acc:
                return v.name
        return self.variants[-1].name  # x == total only through rounding

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "salt": self.salt,
            "variants": [v.to_dict() for v in self.variants],
            "holdout": self.holdout,
            "state": self.state,
            "description": self.description,
            "created_by": self.created_by,
            "created_ms": self.created_ms,
            "started_ms": self.started_ms,
            "stopped_ms": self.stopped_ms,
            "split": {k: round(v, 6) for k, v in self.split().items()},
            "flags": sorted(self.flags),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Experiment:
        """Inverse of :meth:`to_dict` (stored definitions; trusted input)."""
        return cls(
            id=str(d["id"]),
            salt=str(d["salt"]),
            variants=tuple(Variant(str(v["name"]), float(v["weight"]), dict(v.get("flags") or {})) for v in d["variants"]),
            holdout=float(d.get("holdout") or 0.0),
            state=d.get("state", "running"),
            description=str(d.get("description") or ""),
            created_by=str(d.get("created_by") or ""),
            created_ms=int(d.get("created_ms") or 0),
            started_ms=d.get("started_ms"),
            stopped_ms=d.get("stopped_ms"),
        )


def _bad(msg: str) -> BadFrame:
    return BadFrame(msg, code="invalid")


def _scalar(v: Any, where: str) -> Scalar:
    if isinstance(v, bool | int | float) or (isinstance(v, str) and len(v) <= 200):
        return v
    raise _bad(f"{where} must be a string (<= 200 chars), a number or a boolean")


def parse_experiment(body: Any, *, created_by: str, now_ms: int, default_salt: str) -> Experiment:
    """Validate ``POST /api/v1/experiments``::

        {"id": "feed-1", "description": "...", "holdout": 0.1, "start": true,
         "salt": "optional, default random",
         "variants": [{"name": "control", "weight": 50, "flags": {"feed.ranker": "popularity"}},
                      {"name": "personal", "weight": 50, "flags": {"feed.ranker": "personalised"}}]}

    ``variants`` may also be a mapping ``{name: weight}`` with ``flags`` given per name
    as ``{"flags": {name: {...}}}``. Weights are relative (50/50, 1/1 and 0.5/0.5 are the
    same split). ``start: false`` creates a draft.

    Raises:
        BadFrame: (``invalid``) naming the bad field.
    """
    if not isinstance(body, Mapping):
        raise _bad("body must be a JSON object")
    eid = body.get("id")
    if not isinstance(eid, str) or not _ID.match(eid):
        raise _bad("'id' must be 1..48 letters, digits, - or _")
    raw = body.get("variants")
    if isinstance(raw, Mapping):
        per = body.get("flags") or {}
        if not isinstance(per, Mapping):
            raise _bad("'flags' must map variant names to flag objects")
        raw = [{"name": k, "weight": w, "flags": per.get(k, {})} for k, w in raw.items()]
    if not isinstance(raw, list) or not 2 <= len(raw) <= MAX_VARIANTS:
        raise _bad(f"'variants' must list 2..{MAX_VARIANTS} variants (the first is the control)")
    variants: list[Variant] = []
    for i, v in enumerate(raw):
        where = f"variants[{i}]"
        if not isinstance(v, Mapping):
            raise _bad(f"{where} must be an object {{name, weight, flags}}")
        name, weight, flags = v.get("name"), v.get("weight", 1), v.get("flags", {})
        if not isinstance(name, str) or not _VARIANT.match(name) or name == HOLDOUT:
            raise _bad(f"{where}.name must be 1..32 letters, digits, - or _ (not 'holdout')")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= 1e6:
            raise _bad(f"{where}.weight must be a positive number")
        if not isinstance(flags, Mapping) or len(flags) > MAX_FLAGS:
            raise _bad(f"{where}.flags must be an object of at most {MAX_FLAGS} flags")
        for k in flags:
            if not isinstance(k, str) or len(k) > 64 or not _FLAG.match(k):
                raise _bad(f"{where}.flags: {k!r} is not a flag name (lowercase words joined by '.')")
        variants.append(Variant(name, float(weight), {k: _scalar(x, f"{where}.flags.{k}") for k, x in flags.items()}))
    if len({v.name for v in variants}) != len(variants):
        raise _bad("variant names must be unique")
    if not any(v.flags for v in variants):
        raise _bad("no variant sets a flag: an experiment must change something")
    holdout = body.get("holdout", 0)
    if isinstance(holdout, bool) or not isinstance(holdout, int | float) or not 0 <= holdout <= MAX_HOLDOUT:
        raise _bad(f"'holdout' must be a fraction in [0, {MAX_HOLDOUT}]")
    salt = body.get("salt", default_salt)
    if not isinstance(salt, str) or not 0 < len(salt) <= 64:
        raise _bad("'salt' must be 1..64 characters")
    desc = body.get("description", "")
    if not isinstance(desc, str) or len(desc) > 500:
        raise _bad("'description' must be at most 500 characters")
    start = body.get("start", True)
    if not isinstance(start, bool):
        raise _bad("'start' must be true or false")
    return Experiment(
        id=eid,
        salt=salt,
        variants=tuple(variants),
        holdout=float(holdout),
        state="running" if start else "draft",
        description=desc,
        created_by=created_by,
        created_ms=now_ms,
        started_ms=now_ms if start else None,
    )


def step(exp: Experiment, s: ExpStep, *, now_ms: int) -> Experiment:
    """Apply a life-cycle step; a step whose effect already holds (start a running one,
    stop a stopped one) returns ``exp`` unchanged.

    Raises:
        Conflict: illegal from the current state (start a stopped experiment).
    """
    nxt = EXPERIMENT_TRANSITIONS.get((exp.state, s))
    if nxt is None:
        if (exp.state, s) in (("running", "start"), ("stopped", "stop")):
            return exp
        raise Conflict(f"experiment {exp.id!r} is {exp.state}; cannot {s} it", code="conflict")
    if nxt == "running":
        return replace(exp, state=nxt, started_ms=now_ms)
    return replace(exp, state=nxt, stopped_ms=now_ms)


def check_flag_owners(candidate: Experiment, others: Iterable[Experiment]) -> None:
    """A running ``candidate`` may not share a flag with another running experiment.

    Raises:
        Conflict: naming the flag and the experiment that controls it.
    """
    if candidate.state != "running":
        return
    for o in others:
        if o.id != candidate.id and o.state == "running":
            shared = candidate.flags & o.flags
            if shared:
                raise Conflict(f"flag {sorted(shared)[0]!r} is controlled by running experiment {o.id!r}", code="conflict")


def exposure_event_id(exp_id: str, user: str) -> str:
    return f"exp:{exp_id}:{user}"


def exposure_data(exp_id: str, variant: str, user: str) -> dict[str, Any]:
    return {"exp": exp_id, "variant": variant, "user": user}


@dataclass(frozen=True, slots=True)
class Exposure:
    exp: str
    variant: str


class Book:
    """The running experiments, indexed by the flags they control (a value: rebuild it
    when the definitions change)."""

    def __init__(self, experiments: Iterable[Experiment] = ()) -> None:
        self.experiments = {e.id: e for e in experiments}
        self._owner: dict[str, Experiment] = {}
        for e in sorted(self.experiments.values(), key=lambda e: (e.started_ms or 0, e.id)):
            if e.state == "running":
                for f in e.flags:
                    self._owner.setdefault(f, e)  # the oldest running owner wins a (rare) race

    def resolve(self, user: str, flag: str, default: Any) -> tuple[Any, Exposure | None]:
        """The flag's value for ``user`` and the exposure it makes (None: no running
        experiment controls the flag)."""
        e = self._owner.get(flag)
        if e is None:
            return default, None
        arm = e.assign(user)
        v = e.variant(arm)
        value = v.flags.get(flag, default) if v is not None else default
        return value, Exposure(e.id, arm)

    def flag(self, user: str, flag: str, default: Any) -> Any:
        return self.resolve(user, flag, default)[0]

    def flags_for(self, user: str, defaults: Mapping[str, Any] = FLAG_DEFAULTS) -> tuple[dict[str, Any], list[Exposure]]:
        """Every known flag (``defaults`` and the flags of running experiments) for
        ``user``, and the exposures that answer makes (one per experiment)."""
        out: dict[str, Any] = dict(defaults)
        seen: dict[str, Exposure] = {}
        for f in sorted(set(defaults) | set(self._owner)):
            value, exp = self.resolve(user, f, defaults.get(f))
            out[f] = value
            if exp is not None:
                seen[exp.exp] = exp
        return out, list(seen.values())


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class ArmStats:
    """Sufficient statistics of one arm, aggregated by the SQL side over exposed users
    (conversions from each user's first exposure until the experiment stopped)."""

    exposed: int
    converted: int = 0  # users with a paid order
    buyers: int = 0  # users who reserved an order (tried to buy)
    gifters: int = 0
    watchers: int = 0
    gmv: int = 0  # cents, net of refunds
    gmv_sq: float = 0.0  # sum over users of (user's gmv)^2
    watch_min: int = 0


def _rate(x: int, n: int) -> float:
    return round(x / n, 6) if n else 0.0


def results(exp: Experiment, arms: Mapping[str, ArmStats], *, confidence: float = 0.95, now_ms: int | None = None) -> dict[str, Any]:
    """The results JSON of ``exp`` from per-arm statistics (missing arms count as empty).

    Shape::

        {"experiment": {...definition...}, "confidence": 0.95, "primary": "conversion",
         "arms": [{"arm": "control", "control": true, "exposed": n, "share": observed share,
                   "expected_share": configured share,
                   "conversion": {"rate", "ci": [lo, hi], "converted"},
                   "gmv_per_viewer": {"mean", "ci": [lo, hi], "sd"}, "gmv": cents,
                   "buy_rate", "gift_rate", "watch_rate", "watch_min_per_viewer",
                   "vs_control": {"conversion": {z-test}, "gmv_per_viewer": {mean test},
                                  "significant": bool} | None}, ...],
         "srm": {"observed", "expected", "stat", "df", "p_value", "mismatch"},
         "winner": arm name | None}

    ``winner`` is the treatment with the highest conversion rate among those
    significantly above the control at ``1 - confidence`` (None when there is none or the
    split is broken: results under a sample-ratio mismatch are not to be trusted).
    """
    alpha = 1.0 - confidence
    order = [v.name for v in exp.variants] + ([HOLDOUT] if exp.holdout > 0 else [])
    split = exp.split()
    empty = ArmStats(0)
    got = {a: arms.get(a, empty) for a in order}
    control = got[exp.control.name]
    c_mean = mean_summary(control.exposed, control.gmv, control.gmv_sq, confidence)
    total = sum(s.exposed for s in got.values())
    rows: list[dict[str, Any]] = []
    best: tuple[float, str] | None = None
    for a in order:
        s = got[a]
        lo, hi = wilson_interval(s.converted, s.exposed, confidence)
        m = mean_summary(s.exposed, s.gmv, s.gmv_sq, confidence)
        row: dict[str, Any] = {
            "arm": a,
            "control": a == exp.control.name,
            "exposed": s.exposed,
            "share": _rate(s.exposed, total),
            "expected_share": round(split[a], 6),
            "conversion": {"converted": s.converted, "rate": _rate(s.converted, s.exposed), "ci": [round(lo, 6), round(hi, 6)]},
            "gmv": s.gmv,
            "gmv_per_viewer": {"mean": round(m.mean, 3), "sd": round(m.sd, 3), "ci": [round(m.ci_low, 3), round(m.ci_high, 3)]},
            "buy_rate": _rate(s.buyers, s.exposed),
            "gift_rate": _rate(s.gifters, s.exposed),
            "watch_rate": _rate(s.watchers, s.exposed),
            "watch_min_per_viewer": round(s.watch_min / s.exposed, 3) if s.exposed else 0.0,
            "vs_control": None,
        }
        if a != exp.control.name:
            zt = two_proportion_ztest(control.converted, control.exposed, s.converted, s.exposed, confidence)
            mt = mean_ztest(c_mean, m, confidence)
            sig = zt.p_value < alpha
            row["vs_control"] = {
                "conversion": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in zt.to_dict().items()},
                "gmv_per_viewer": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in mt.to_dict().items()},
                "significant": sig,
            }
            if a != HOLDOUT and sig and zt.diff > 0 and (best is None or zt.p_b > best[0]):
                best = (zt.p_b, a)
        rows.append(row)
    srm = chi_square_gof([got[a].exposed for a in order], [max(split[a], 1e-12) for a in order])
    return {
        "experiment": exp.to_dict(),
        "confidence": confidence,
        "primary": "conversion",
        "computed_ms": now_ms,
        "arms": rows,
        "srm": srm.to_dict(),
        "winner": None if srm.mismatch or best is None else best[1],
    }


def arms_from_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, ArmStats]:
    """Per-arm statistics from SQL rows with the :class:`ArmStats` field names and ``arm``."""
    return {
        str(r["arm"]): ArmStats(
            exposed=int(r["exposed"] or 0),
            converted=int(r["converted"] or 0),
            buyers=int(r["buyers"] or 0),
            gifters=int(r["gifters"] or 0),
            watchers=int(r["watchers"] or 0),
            gmv=int(r["gmv"] or 0),
            gmv_sq=float(r["gmv_sq"] or 0),
            watch_min=int(r["watch_min"] or 0),
        )
        for r in rows
    }
