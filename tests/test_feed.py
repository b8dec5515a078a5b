"""The feed, pure part: diversity rules hold on every page, ended rooms are never listed,
cold-start viewers get popularity, affinity moves rooms up, rates follow the counters."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from livecommerce.feed import (
    COLD,
    Affinity,
    LiveRoom,
    SignalWindow,
    affinity_from_profile,
    arrange,
    category_cap,
    online_total,
    rank,
    rank_personalised,
    rank_popularity,
    top_ids,
)

NOW = 10_000_000

rooms_st = st.lists(
    st.builds(
        LiveRoom,
        id=st.integers(0, 10_000).map(lambda i: f"r{i}"),
        host=st.integers(0, 12).map(lambda i: f"h{i}"),
        state=st.sampled_from(["live", "live", "live", "ended", "created"]),
        category=st.sampled_from([None, "tea", "beauty", "toys", "food"]),
        live_ms=st.integers(NOW - 3_600_000, NOW),
        online=st.integers(0, 5000),
        comments_pm=st.floats(0, 500),
        likes_pm=st.floats(0, 5000),
        gmv_pm=st.floats(0, 1e6),
    ),
    max_size=60,
)
affinity_st = st.builds(
    Affinity,
    categories=st.dictionaries(st.sampled_from(["tea", "beauty", "toys"]), st.floats(0.01, 1.0), max_size=3),
    followed=st.frozensets(st.integers(0, 12).map(lambda i: f"h{i}"), max_size=3),
    clubs=st.frozensets(st.integers(0, 12).map(lambda i: f"h{i}"), max_size=2),
    intimacy=st.dictionaries(st.integers(0, 12).map(lambda i: f"h{i}"), st.integers(1, 5000), max_size=5),
)


@settings(max_examples=100, deadline=None)
@given(rooms_st, affinity_st, st.sampled_from(["popularity", "personalised"]), st.integers(1, 12))
def test_pages_keep_the_diversity_rules_and_never_list_a_room_that_is_not_live(
    rooms: list[LiveRoom], affinity: Affinity, ranker: str, size: int
) -> None:
    ranked = rank(ranker, rooms, affinity, NOW)
    pages = arrange(ranked, size)
    placed = [s.room for p in pages for s in p]
    live_ids = {r.id for r in rooms if r.state == "live"}
    assert all(r.state == "live" for r in placed)
    assert sorted(r.id for r in placed) == sorted(live_ids)  # every live room once, nothing else
    cap = category_cap(size)
    for i, page in enumerate(pages):
        assert 0 < len(page) <= size
        hosts = [s.room.host for s in page]
        assert len(hosts) == len(set(hosts)), "a host twice on one page"
        counts: dict[str, int] = {}
        for s in page:
            if s.room.category:
                counts[s.room.category] = counts.get(s.room.category, 0) + 1
        if any(n > cap for n in counts.values()):
            # only when nothing else could spread it: every later room shares a host with
            # this page or is of a category already at its cap here
            for later in (s.room for p in pages[i + 1 :] for s in p):
                assert later.host in hosts or counts.get(later.category or "", 0) >= cap


def test_categories_spread_when_the_top_rooms_share_one() -> None:
    tea = [LiveRoom(f"t{i}", f"ht{i}", category="tea", live_ms=NOW, online=1000 - i) for i in range(8)]
    other = [LiveRoom(f"o{i}", f"ho{i}", category=c, live_ms=NOW, online=10 - i) for i, c in enumerate(["toys", "food", "beauty"])]
    page = arrange(rank_popularity(tea + other, NOW), 5)[0]
    cats = [s.room.category for s in page]
    assert cats.count("tea") == category_cap(5) == 2 and {"toys", "food", "beauty"} <= set(cats)
    assert [s.room.id for s in page][:2] == ["t0", "t1"]  # the order holds where the rules allow


def test_an_ended_room_is_never_listed_however_popular() -> None:
    rooms = [LiveRoom("hot", "h1", state="ended", online=10**6, live_ms=NOW), LiveRoom("calm", "h2", online=3, live_ms=NOW)]
    for ranker in ("popularity", "personalised"):
        ids = top_ids(rank(ranker, rooms, Affinity(followed=frozenset({"h1"})), NOW), 10)
        assert ids == ["calm"]


def test_cold_start_viewers_get_the_popularity_order() -> None:
    rooms = [LiveRoom(f"r{i}", f"h{i}", category="tea", online=(i * 37) % 101, comments_pm=i % 7, live_ms=NOW - i * 60_000) for i in range(30)]
    pop = [s.room.id for s in rank_popularity(rooms, NOW)]
    assert [s.room.id for s in rank_personalised(rooms, COLD, NOW)] == pop
    assert [s.room.id for s in rank_personalised(rooms, affinity_from_profile({}), NOW)] == pop
    assert [s.room.id for s in rank_personalised(rooms, affinity_from_profile(None), NOW)] == pop


def test_affinity_lifts_followed_hosts_and_favourite_categories_with_a_reason() -> None:
    rooms = [
        LiveRoom("big", "h1", category="toys", online=5000, live_ms=NOW - 3_600_000),
        LiveRoom("mine", "h2", category="tea", online=40, live_ms=NOW - 3_600_000),
        LiveRoom("fav", "h3", category="beauty", online=60, live_ms=NOW - 3_600_000),
    ]
    view = {"category_spend": {"beauty": 9000, "tea": 1000}, "hosts_followed": ["h2"], "fan_clubs": ["h2"], "intimacy": {"h2": 500}}
    ranked = rank_personalised(rooms, affinity_from_profile(view), NOW)
    assert [s.room.id for s in ranked] == ["mine", "fav", "big"]
    assert ranked[0].reasons[0] == "intimacy" and ranked[0].why == "You often watch h2"
    assert ranked[1].reasons[0] == "category" and "beauty" in ranked[1].why
    assert rank_popularity(rooms, NOW)[0].room.id == "big"


def test_rates_follow_the_counters_within_the_window() -> None:
    w = SignalWindow()
    live = NOW - 600_000
    w.observe("r", live_ms=live, now_ms=NOW, comments=100, likes=1000, gmv=0)
    assert w.rates("r", now_ms=NOW) == (10.0, 100.0, 0.0)  # the show's average over 10 minutes
    for i in range(1, 16):  # then 30 comments, 300 likes and 1,000 cents every 2 s
        w.observe("r", live_ms=live, now_ms=NOW + 2000 * i, comments=100 + 30 * i, likes=1000 + 300 * i, gmv=1000 * i)
    c, lk, g = w.rates("r", now_ms=NOW + 30_000)
    assert (round(c), round(lk), round(g)) == (900, 9000, 30_000)
    w.observe("r", live_ms=live + 1, now_ms=NOW + 40_000, comments=0, likes=0, gmv=0)  # a new show
    assert w.rates("r", now_ms=NOW + 40_000) == (0.0, 0.0, 0.0)
    w.keep_only([])
    assert w.rates("r", now_ms=NOW) == (0.0, 0.0, 0.0)


def test_online_counts_only_fresh_nodes() -> None:
    assert online_total({b"n1": b"5:9990000", b"n2": f"7:{NOW}".encode(), "n3": "bad"}, NOW) == 7


def test_the_feed_experiment_growth_and_referral_cores_do_no_io() -> None:
    from tests.test_architecture import IO_LIBS, ROOT, imports_of

    for rel in ("feed.py", "experiments.py", "experiment_stats.py", "growth.py", "referrals.py"):
        assert not imports_of(ROOT / rel) & IO_LIBS, rel
