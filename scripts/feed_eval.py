#!/usr/bin/env python
"""Offline evaluation of the feed rankers on a seeded synthetic event log.

    python scripts/feed_eval.py --seed 7            # ~3,000 held-out purchases, < 2 min

1. **Generate** a log with the shapes of a live-commerce app (all draws from one
   ``random.Random(seed)``): hosts with Zipf popularity (exponent ``--zipf``) and a main
   product category; viewers with latent category tastes (a sparse Dirichlet) and their
   own activity and spending levels; ``--days`` days of evening slots in which the hosts
   go live (popular hosts more often) and active viewers pick rooms by a choice model
   (popularity x taste x loyalty to hosts they know), watch, comment, like, gift, buy,
   and follow or join the fan clubs of hosts they like. The events are the product's
   own (``activity.watch``, ``activity.comment``, ``gift.sent``, ``order.paid``,
   ``fan.follow``, ``fan.club``) with the fields the workers read.
2. **Replay**: the events before the split (the last ``--test-days`` days are held out)
   are folded into viewer profiles by :mod:`livecommerce.profiles` (the profiles
   worker's own fold) and turned into affinities by :func:`livecommerce.feed.affinity_from_profile`.
3. **Evaluate**: for each viewer's next purchase after the split, the rooms live in that
   slot are ranked by each ranker of :mod:`livecommerce.feed` (the code behind ``GET
   /api/v1/feed``; the first page of 10 under the diversity rules), with live signals
   measured in that slot minus the viewer's own activity (no leak of the label into
   popularity). Relevant items: the rooms the viewer bought in during that slot.
   Reported per ranker: precision@10, recall@10, NDCG@10 (binary relevance), hit rate,
   catalogue coverage (distinct rooms recommended / distinct candidate rooms) and a
   paired bootstrap 95% interval of the NDCG@10 lift over popularity.

Writes ``docs/img/feed_eval.json`` and ``docs/img/feed_eval.png`` (matplotlib, the
``bench`` extra; ``--no-plot`` skips it). Prints one progress line on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livecommerce.feed import RANKERS, LiveRoom, affinity_from_profile, rank, top_ids
from livecommerce.profiles import Context, contributions, fold, view

DAY_MS = 86_400_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
SLOT_MS = 3_600_000
FIRST_SLOT_H = 18
CATEGORIES = ("tea", "beauty", "fashion", "toys", "food", "electronics", "home", "sports", "books", "jewellery")
K = 10


@dataclass
class Config:
    seed: int = 7
    viewers: int = 6000
    hosts: int = 500
    days: int = 21
    test_days: int = 4
    slots: int = 5
    zipf: float = 1.1
    taste_alpha: float = 0.3
    bootstrap: int = 1000


@dataclass
class Host:
    id: str
    category: str
    pop: float
    live_p: float


@dataclass
class Viewer:
    id: str
    taste: list[float]
    activity: float
    spend: float
    known: dict[str, float] = field(default_factory=dict)  # host -> minutes watched
    follows: set[str] = field(default_factory=set)
    clubs: set[str] = field(default_factory=set)
    fan_v: int = 0


@dataclass
class Room:
    id: str
    host: Host
    day: int
    slot: int
    live_ms: int
    online: set[str] = field(default_factory=set)
    comments: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    likes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    gmv: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass
class World:
    hosts: list[Host]
    viewers: list[Viewer]
    rooms: dict[tuple[int, int], list[Room]]
    events: list[tuple[str, dict[str, Any], int]]  # (type, data, ts)
    room_by_id: dict[str, Room]


def _dirichlet(rng: random.Random, alpha: float, k: int) -> list[float]:
    g = [rng.gammavariate(alpha, 1.0) for _ in range(k)]
    s = sum(g) or 1.0
    return [x / s for x in g]


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _progress(msg: str) -> None:
    sys.stderr.write(f"\r{msg:<78}")
    sys.stderr.flush()


def generate(cfg: Config, rng: random.Random) -> World:
    """The synthetic world and its event log (see the module docstring)."""
    ranks = list(range(1, cfg.hosts + 1))
    rng.shuffle(ranks)
    cat_w = [1.0 / (i + 1) ** 0.5 for i in range(len(CATEGORIES))]  # some categories are bigger
    hosts = []
    for i in range(cfg.hosts):
        pop = 1.0 / ranks[i] ** cfg.zipf
        hosts.append(Host(f"h{i:03d}", rng.choices(CATEGORIES, cat_w)[0], pop, 0.0))
    top = max(h.pop for h in hosts)
    for h in hosts:
        h.live_p = min(0.9, 0.12 + 0.6 * (h.pop / top) ** 0.3)
    viewers = [
        Viewer(f"v{i:05d}", _dirichlet(rng, cfg.taste_alpha, len(CATEGORIES)),
               activity=min(0.95, rng.betavariate(1.2, 2.5)), spend=rng.lognormvariate(0.0, 0.6))
        for i in range(cfg.viewers)
    ]
    cat_index = {c: i for i, c in enumerate(CATEGORIES)}
    logt = {v.id: [1.6 * math.log(0.03 + t) for t in v.taste] for v in viewers}
    events: list[tuple[str, dict[str, Any], int]] = []
    rooms: dict[tuple[int, int], list[Room]] = {}
    room_by_id: dict[str, Room] = {}
    for day in range(cfg.days):
        _progress(f"[generate] day {day + 1}/{cfg.days}: {len(events):,} events")
        for slot in range(cfg.slots):
            start = T0 + day * DAY_MS + (FIRST_SLOT_H + slot) * SLOT_MS
            live = [h for h in hosts if rng.random() < h.live_p / cfg.slots * 2]
            rs = [Room(f"{h.id}-d{day:02d}s{slot}", h, day, slot, start - rng.randrange(0, 50) * 60_000) for h in live]
            rooms[(day, slot)] = rs
            for r in rs:
                room_by_id[r.id] = r
            if not rs:
                continue
            base = [0.8 * math.log(r.host.pop) for r in rs]
            cats = [cat_index[r.host.category] for r in rs]
            for v in viewers:
                if rng.random() > v.activity / cfg.slots * 1.6:
                    continue
                lt = logt[v.id]
                util = [b + lt[c] for b, c in zip(base, cats, strict=True)]
                if v.known:
                    for j, r in enumerate(rs):
                        known = v.known.get(r.host.id)
                        if known:
                            util[j] += 1.2 * (r.host.id in v.follows) + 0.4 * math.log1p(known / 20)
                top_u = max(util)
                weights = [math.exp(u - top_u) for u in util]
                n_visits = min(len(rs), 1 + _poisson(rng, 0.7))
                picked: list[Room] = []
                for _ in range(n_visits):
                    r = rng.choices(rs, weights)[0]
                    if r not in picked:
                        picked.append(r)
                for r in picked:
                    _visit(rng, v, r, start, events, cat_index)
    _progress(f"[generate] {cfg.days} days: {len(events):,} events, {len(room_by_id):,} shows")
    events.sort(key=lambda e: e[2])
    return World(hosts, viewers, rooms, events, room_by_id)


def _visit(rng: random.Random, v: Viewer, r: Room, start: int, events: list[tuple[str, dict[str, Any], int]],
           cat_index: dict[str, int]) -> None:
    t = v.taste[cat_index[r.host.category]]
    ts = start + rng.randrange(0, SLOT_MS - 600_000)
    minutes = max(1, int(rng.expovariate(1.0 / (4 + 30 * t))))
    r.online.add(v.id)
    events.append(("activity.watch", {"user": v.id, "room": r.id, "minutes": minutes}, ts + minutes * 60_000))
    v.known[r.host.id] = v.known.get(r.host.id, 0.0) + minutes
    for i in range(min(5, _poisson(rng, 0.05 * minutes * (0.5 + t)))):
        r.comments[v.id] += 1
        events.append(("activity.comment", {"user": v.id, "room": r.id}, ts + i * 30_000 + 1))
    r.likes[v.id] += _poisson(rng, 1.5 * minutes)
    if rng.random() < 0.02 + 0.06 * t:
        value = max(1, int(rng.lognormvariate(3.0, 1.0)))
        events.append(("gift.sent", {"user": v.id, "room": r.id, "host": r.host.id, "value": value}, ts + 2))
    if rng.random() < min(0.6, (0.01 + 0.25 * t) * v.spend):
        amount = max(100, int(rng.lognormvariate(8.0, 0.7)))
        r.gmv[v.id] += amount
        events.append(("order.paid", {"user_id": v.id, "room_id": r.id, "sale_id": f"{r.id}-sale", "host": r.host.id,
                                      "amount": amount, "order_id": f"o-{v.id}-{r.id}"}, ts + 3))
    if r.host.id not in v.follows and minutes >= 10 and rng.random() < 0.04 + 0.3 * t:
        v.follows.add(r.host.id)
        v.fan_v += 1
        events.append(("fan.follow", {"user": v.id, "host": r.host.id, "on": True, "v": v.fan_v}, ts + 4))
        if rng.random() < 0.25:
            v.clubs.add(r.host.id)
            v.fan_v += 1
            events.append(("fan.club", {"user": v.id, "host": r.host.id, "on": True, "v": v.fan_v}, ts + 5))


# ---------------------------------------------------------------- replay and evaluation


def build_profiles(world: World, until_ms: int, users: set[str]) -> dict[str, dict[str, Any]]:
    """Fold the events before ``until_ms`` of ``users`` with the profiles worker's fold
    (events of other viewers say nothing about these); return their views."""
    ctx = Context(
        host_of=lambda room: world.room_by_id[room].host.id if room in world.room_by_id else None,
        category_of=lambda sale: world.room_by_id[sale.removesuffix("-sale")].host.category if sale.removesuffix("-sale") in world.room_by_id else None,
        key_of=lambda u: u,
    )
    partials: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for etype, data, ts in world.events:
        if ts >= until_ms:
            break
        if (data.get("user") or data.get("user_id")) not in users:
            continue
        for user, p in contributions(etype, data, ts, ctx):
            partials[user].append(p)
    return {u: view(u, fold(ps), until_ms) for u, ps in partials.items()}


@dataclass
class Case:
    viewer: str
    day: int
    slot: int
    relevant: set[str]


def held_out_cases(world: World, split_ms: int) -> list[Case]:
    """Each viewer's first purchase after the split: its slot and the rooms bought in then."""
    first: dict[str, tuple[int, int]] = {}
    bought: dict[tuple[str, int, int], set[str]] = defaultdict(set)
    for etype, data, ts in world.events:
        if etype != "order.paid" or ts < split_ms:
            continue
        r = world.room_by_id[data["room_id"]]
        u = data["user_id"]
        first.setdefault(u, (r.day, r.slot))
        bought[(u, r.day, r.slot)].add(r.id)
    return [Case(u, d, s, bought[(u, d, s)]) for u, (d, s) in sorted(first.items())]


def candidates_for(world: World, case: Case) -> list[LiveRoom]:
    """The slot's live rooms with signals measured without the viewer's own activity."""
    out = []
    for r in world.rooms[(case.day, case.slot)]:
        u = case.viewer
        online = len(r.online) - (u in r.online)
        comments = sum(r.comments.values()) - r.comments.get(u, 0)
        likes = sum(r.likes.values()) - r.likes.get(u, 0)
        gmv = sum(r.gmv.values()) - r.gmv.get(u, 0)
        out.append(LiveRoom(r.id, r.host.id, "live", r.id, r.host.category, r.live_ms, online,
                            comments / 60, likes / 60, gmv / 60))
    return out


def ndcg(top: Sequence[str], relevant: set[str], k: int = K) -> float:
    dcg = sum(1.0 / math.log2(i + 2) for i, rid in enumerate(top[:k]) if rid in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal if ideal else 0.0


def evaluate(world: World, cfg: Config, rng: random.Random) -> dict[str, Any]:
    split_ms = T0 + (cfg.days - cfg.test_days) * DAY_MS
    cases = held_out_cases(world, split_ms)
    _progress(f"[replay] folding the profiles of {len(cases)} viewers")
    profiles = build_profiles(world, split_ms, {c.viewer for c in cases})
    per: dict[str, dict[str, list[float]]] = {n: defaultdict(list) for n in RANKERS}
    shown: dict[str, set[str]] = {n: set() for n in RANKERS}
    catalogue: set[str] = set()
    cold = 0
    sizes = []
    for i, case in enumerate(cases):
        if i % 200 == 0:
            _progress(f"[evaluate] case {i + 1}/{len(cases)}")
        now = T0 + case.day * DAY_MS + (FIRST_SLOT_H + case.slot) * SLOT_MS + SLOT_MS // 2
        cands = candidates_for(world, case)
        sizes.append(len(cands))
        catalogue.update(r.id for r in cands)
        aff = affinity_from_profile(profiles.get(case.viewer))
        cold += aff.cold
        for name in RANKERS:
            top = top_ids(rank(name, cands, aff, now), K)
            hits = sum(1 for rid in top if rid in case.relevant)
            per[name]["precision"].append(hits / K)
            per[name]["recall"].append(hits / len(case.relevant))
            per[name]["ndcg"].append(ndcg(top, case.relevant))
            per[name]["hit"].append(1.0 if hits else 0.0)
            shown[name].update(top)
    _progress(f"[evaluate] {len(cases)} cases; bootstrap")
    metrics = {
        name: {
            "precision@10": sum(m["precision"]) / len(cases),
            "recall@10": sum(m["recall"]) / len(cases),
            "ndcg@10": sum(m["ndcg"]) / len(cases),
            "hit_rate@10": sum(m["hit"]) / len(cases),
            "coverage": len(shown[name]) / len(catalogue),
        }
        for name, m in per.items()
    }
    a, b = per["popularity"]["ndcg"], per["personalised"]["ndcg"]
    lifts = []
    n = len(cases)
    for _ in range(cfg.bootstrap):
        idx = rng.choices(range(n), k=n)
        sa, sb = sum(a[j] for j in idx), sum(b[j] for j in idx)
        lifts.append(sb / sa - 1.0 if sa else 0.0)
    lifts.sort()
    lift = metrics["personalised"]["ndcg@10"] / metrics["popularity"]["ndcg@10"] - 1.0
    return {
        "cases": n,
        "cold_start_cases": cold,
        "candidates_per_case": sum(sizes) / len(sizes),
        "catalogue_rooms": len(catalogue),
        "metrics": metrics,
        "ndcg_lift": lift,
        "ndcg_lift_ci95": [lifts[int(0.025 * len(lifts))], lifts[int(0.975 * len(lifts)) - 1]],
        "precision_lift": metrics["personalised"]["precision@10"] / metrics["popularity"]["precision@10"] - 1.0,
        "recall_lift": metrics["personalised"]["recall@10"] / metrics["popularity"]["recall@10"] - 1.0,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["precision@10", "recall@10", "ndcg@10", "hit_rate@10", "coverage"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.38
    for i, ranker in enumerate(RANKERS):
        vals = [result["metrics"][ranker][m] for m in names]
        xs = [j + (i - 0.5) * width for j in range(len(names))]
        ax.bar(xs, vals, width, label=ranker)
        for x, v in zip(xs, vals, strict=True):
            ax.text(x, v + 0.01, f"{v:.3f}", ha="center", fontsize=7)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1.05)
    c = result["config"]
    ax.set_title(f"Feed rankers on held-out next purchases (seed {c['seed']}, {result['cases']} cases, "
                 f"{result['candidates_per_case']:.0f} live rooms each)", fontsize=9)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=Config.seed)
    ap.add_argument("--viewers", type=int, default=Config.viewers)
    ap.add_argument("--hosts", type=int, default=Config.hosts)
    ap.add_argument("--days", type=int, default=Config.days)
    ap.add_argument("--test-days", type=int, default=Config.test_days)
    ap.add_argument("--zipf", type=float, default=Config.zipf)
    ap.add_argument("--bootstrap", type=int, default=Config.bootstrap)
    ap.add_argument("--out", default="docs/img/feed_eval.json")
    ap.add_argument("--plot", default="docs/img/feed_eval.png")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)
    cfg = Config(seed=args.seed, viewers=args.viewers, hosts=args.hosts, days=args.days, test_days=args.test_days,
                 zipf=args.zipf, bootstrap=args.bootstrap)
    t0 = time.monotonic()
    rng = random.Random(cfg.seed)
    world = generate(cfg, rng)
    result = evaluate(world, cfg, rng)
    result["config"] = cfg.__dict__
    result["events"] = len(world.events)
    result["command"] = "python scripts/feed_eval.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    _progress(f"[done] {result['elapsed_s']} s")
    sys.stderr.write("\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_plot:
        plot(result, Path(args.plot))
    m = result["metrics"]
    print(f"{result['events']:,} events, {result['cases']} held-out purchases ({result['cold_start_cases']} cold-start), "
          f"{result['candidates_per_case']:.1f} live rooms per case")
    print(f"{'ranker':<14}{'P@10':>8}{'R@10':>8}{'NDCG@10':>9}{'hit@10':>8}{'coverage':>10}")
    for name in RANKERS:
        r = m[name]
        print(f"{name:<14}{r['precision@10']:>8.4f}{r['recall@10']:>8.4f}{r['ndcg@10']:>9.4f}{r['hit_rate@10']:>8.4f}{r['coverage']:>10.3f}")
    lo, hi = result["ndcg_lift_ci95"]
    print(f"personalised vs popularity: NDCG@10 {result['ndcg_lift']:+.1%} (95% bootstrap CI {lo:+.1%} .. {hi:+.1%}), "
          f"precision@10 {result['precision_lift']:+.1%}, recall@10 {result['recall_lift']:+.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
