"""Experiments, pure part: deterministic and sticky assignment within 1% of the split over
100,000 ids, flag resolution, validation, life-cycle and the results JSON."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter

import pytest

from livecommerce.errors import BadFrame, Conflict
from livecommerce.experiment_stats import chi_square_gof, two_proportion_ztest
from livecommerce.experiments import (
    FLAG_DEFAULTS,
    HOLDOUT,
    ArmStats,
    Book,
    Experiment,
    Variant,
    bucket,
    check_flag_owners,
    parse_experiment,
    results,
    step,
)

IDS = [f"user-{i}" for i in range(100_000)]


def _exp(holdout: float = 0.1, salt: str = "s1", eid: str = "e1", flag: str = "feed.ranker") -> Experiment:
    return Experiment(
        id=eid,
        salt=salt,
        variants=(Variant("control", 50, {flag: "popularity"}), Variant("b", 30, {flag: "personalised"}), Variant("c", 20, {flag: "x"})),
        holdout=holdout,
    )


def test_bucket_is_sha256_of_salt_and_user_over_2_to_the_64() -> None:
    want = int.from_bytes(hashlib.sha256(b"s1:alice").digest()[:8], "big") / 2**64
    assert bucket("s1", "alice") == want
    assert 0.0 <= bucket("s1", "alice") < 1.0


def test_assignment_is_within_one_percent_of_the_split_over_100k_ids() -> None:
    exp = _exp(holdout=0.1)
    counts = Counter(exp.assign(u) for u in IDS)
    split = exp.split()
    assert split == pytest.approx({HOLDOUT: 0.1, "control": 0.45, "b": 0.27, "c": 0.18})
    for arm, share in split.items():
        assert abs(counts[arm] / len(IDS) - share) < 0.01, (arm, counts[arm])
    # and the split passes its own sample-ratio check
    assert not chi_square_gof([counts[a] for a in split], list(split.values())).mismatch
    no_holdout = Counter(_exp(holdout=0.0).assign(u) for u in IDS)
    assert HOLDOUT not in no_holdout and abs(no_holdout["control"] / len(IDS) - 0.5) < 0.01


def test_assignment_is_deterministic_sticky_and_independent_across_salts() -> None:
    a, again = _exp(), _exp()
    first = [a.assign(u) for u in IDS[:5000]]
    assert first == [again.assign(u) for u in IDS[:5000]]
    assert first == [a.assign(u) for u in IDS[:5000]]  # asked again: the same arm
    # a second experiment (another salt) splits independently of the first
    other = _exp(salt="s2", eid="e2")
    both = sum(1 for u in IDS[:20_000] if a.assign(u) == "control" and other.assign(u) == "control")
    assert abs(both / 20_000 - 0.45 * 0.45) < 0.01


def test_another_process_assigns_the_same_arms() -> None:
    """What every gateway and worker computes: no per-process hash seed involved."""
    code = (
        "from livecommerce.experiments import Experiment, Variant\n"
        "e = Experiment('e1', 's1', (Variant('control', 50, {'feed.ranker': 'popularity'}),"
        " Variant('b', 30, {'feed.ranker': 'personalised'}), Variant('c', 20, {'feed.ranker': 'x'})), holdout=0.1)\n"
        "print(','.join(e.assign(f'user-{i}') for i in range(300)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"})
    assert out.stdout.strip().split(",") == [_exp().assign(f"user-{i}") for i in range(300)]


def test_flags_follow_the_variant_and_fall_back_to_defaults() -> None:
    book = Book([_exp(holdout=0.1)])
    by_arm: dict[str, str] = {}
    for u in IDS[:2000]:
        arm = _exp().assign(u)
        by_arm.setdefault(arm, u)
    assert book.flag(by_arm["b"], "feed.ranker", "popularity") == "personalised"
    assert book.flag(by_arm[HOLDOUT], "feed.ranker", "popularity") == "popularity"
    value, exposure = book.resolve(by_arm["c"], "feed.ranker", "popularity")
    assert value == "x" and exposure is not None and (exposure.exp, exposure.variant) == ("e1", "c")
    assert book.resolve("anyone", "countdown.style", "digits") == ("digits", None)
    flags, exposures = book.flags_for(by_arm["b"])
    assert flags == {**FLAG_DEFAULTS, "feed.ranker": "personalised"} and len(exposures) == 1
    stopped = Book([step(_exp(), "stop", now_ms=5)])
    assert stopped.resolve(by_arm["b"], "feed.ranker", "popularity") == ("popularity", None)


def test_a_definition_is_validated_field_by_field() -> None:
    body = {"id": "feed-1", "holdout": 0.1, "variants": [
        {"name": "control", "weight": 1, "flags": {"feed.ranker": "popularity"}},
        {"name": "personal", "weight": 1, "flags": {"feed.ranker": "personalised"}}]}
    e = parse_experiment(body, created_by="ops1", now_ms=10, default_salt="abc")
    assert e.salt == "abc" and e.state == "running" and e.started_ms == 10 and e.control.name == "control"
    assert Experiment.from_dict(e.to_dict()) == e
    short = parse_experiment({"id": "x", "variants": {"a": 1, "b": 3}, "flags": {"b": {"countdown.style": "bar"}}},
                             created_by="o", now_ms=1, default_salt="s")
    assert short.split() == pytest.approx({"a": 0.25, "b": 0.75})
    bad = [
        ({**body, "id": "no spaces"}, "'id'"),
        ({**body, "variants": body["variants"][:1]}, "'variants'"),
        ({**body, "holdout": 0.9}, "'holdout'"),
        ({**body, "variants": [{**body["variants"][0], "weight": 0}, body["variants"][1]]}, "variants[0].weight"),
        ({**body, "variants": [body["variants"][0], {**body["variants"][1], "name": "holdout"}]}, "variants[1].name"),
        ({**body, "variants": [body["variants"][0], {**body["variants"][1], "flags": {"Bad Flag": 1}}]}, "variants[1].flags"),
        ({**body, "variants": [body["variants"][0], {**body["variants"][1], "name": "control"}]}, "unique"),
    ]
    for b, where in bad:
        with pytest.raises(BadFrame, match=where.replace("[", r"\[").replace("]", r"\]")):
            parse_experiment(b, created_by="o", now_ms=1, default_salt="s")


def test_life_cycle_and_one_running_owner_per_flag() -> None:
    draft = parse_experiment({"id": "d", "start": False, "variants": {"a": 1, "b": 1}, "flags": {"b": {"feed.ranker": "p"}}},
                             created_by="o", now_ms=1, default_salt="s")
    assert draft.state == "draft"
    running = step(draft, "start", now_ms=5)
    assert running.state == "running" and running.started_ms == 5 and step(running, "start", now_ms=9) is running
    stopped = step(running, "stop", now_ms=7)
    assert stopped.stopped_ms == 7
    with pytest.raises(Conflict):
        step(stopped, "start", now_ms=8)
    with pytest.raises(Conflict, match=r"feed\.ranker"):
        check_flag_owners(running, [_exp()])
    check_flag_owners(running, [step(_exp(), "stop", now_ms=1)])  # a stopped owner frees the flag


def test_results_compute_rates_tests_and_srm_from_arm_statistics() -> None:
    exp = _exp(holdout=0.1)
    arms = {
        HOLDOUT: ArmStats(1000, converted=50, gmv=100_000, gmv_sq=5e8),
        "control": ArmStats(4500, converted=450, buyers=900, gifters=100, watchers=3000, gmv=900_000, gmv_sq=9e9, watch_min=45_000),
        "b": ArmStats(2700, converted=351, buyers=600, gmv=702_000, gmv_sq=7e9),
        "c": ArmStats(1800, converted=170, gmv=300_000, gmv_sq=3e9),
    }
    r = results(exp, arms)
    rows = {a["arm"]: a for a in r["arms"]}
    assert [a["arm"] for a in r["arms"]] == ["control", "b", "c", HOLDOUT]
    assert rows["control"]["conversion"]["rate"] == 0.1 and rows["control"]["vs_control"] is None
    assert rows["control"]["gmv_per_viewer"]["mean"] == 200.0 and rows["control"]["watch_min_per_viewer"] == 10.0
    ref = two_proportion_ztest(450, 4500, 351, 2700)
    assert rows["b"]["vs_control"]["conversion"]["p_value"] == pytest.approx(ref.p_value, abs=1e-6)
    assert rows["b"]["vs_control"]["significant"] and r["winner"] == "b"
    assert not r["srm"]["mismatch"] and r["srm"]["observed"] == [4500, 2700, 1800, 1000]
    skewed = results(exp, {**arms, "b": ArmStats(3400, converted=442)})
    assert skewed["srm"]["mismatch"] and skewed["winner"] is None
    assert results(exp, {})["arms"][0]["exposed"] == 0
