"""Room moderation's pure rules (livecommerce/moderation.py) and its Redis adapter.

Who may do what to whom, durations, the room state and its changes (the hash and the events
land on the same state), comment and join judgement, reports and their context; then the
adapter against real Redis: one script per change, ended entries pruned, the hash's lifetime,
the moderator cap, platform bans, and the followers set the fan cache keeps.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livecommerce.errors import BadFrame, Conflict, Forbidden
from livecommerce.fanclub_redis import FanclubRedis
from livecommerce.keys import Keys
from livecommerce.moderation import (
    ACTIONS,
    DAY_S,
    FOREVER,
    RANK,
    SPANS,
    Change,
    ChatSettings,
    Relation,
    Role,
    RoomRules,
    active,
    duration_s,
    judge_comment,
    judge_join,
    needs_relation,
    parse_chat,
    parse_report,
    parse_resolution,
    parse_user_action,
    refusal,
    report_context,
    role_in_room,
    target_role,
    until_ms,
)
from livecommerce.moderation_redis import RedisModeration

ROLES: list[Role] = ["viewer", "moderator", "host", "ops"]
NOW = 1_800_000_000_000


# ---------------------------------------------------------------- who may do what to whom
@given(st.sampled_from(sorted(ACTIONS)), st.sampled_from(ROLES), st.sampled_from(ROLES), st.booleans())
def test_an_action_needs_the_least_role_and_a_rank_above_the_target(action: str, actor: Role, target: Role, same: bool) -> None:
    why = refusal(action, actor, actor_id="a", target=target, target_id="a" if same else "b")
    rule = ACTIONS[action]
    if why is None:
        assert RANK[actor] >= RANK[rule.least]
        if rule.on_user and not same:
            assert RANK[target] < RANK[actor]
        if rule.on_user and same:
            assert action == "comment.delete"  # only one's own comment
    else:
        assert RANK[actor] < RANK[rule.least] or (rule.on_user and (same or RANK[target] >= RANK[actor]))


def test_the_permission_matrix_the_issue_names() -> None:
    assert refusal("mute", "viewer", actor_id="v", target="viewer", target_id="w") == "only moderators, the host or ops may mute"
    assert refusal("ban", "moderator", actor_id="m", target="host", target_id="h") == "a moderator may not ban a host"
    assert refusal("mute", "moderator", actor_id="m", target="moderator", target_id="m2") is not None
    assert refusal("kick", "host", actor_id="h", target="moderator", target_id="m") is None
    assert refusal("ban", "host", actor_id="h", target="ops", target_id="o") is not None
    assert refusal("platform.ban", "host", actor_id="h", target="viewer", target_id="v") == "only ops may platform.ban"
    assert refusal("platform.ban", "ops", actor_id="o", target="viewer", target_id="v") is None
    assert refusal("moderator.add", "moderator", actor_id="m", target="viewer", target_id="v") is not None
    assert refusal("moderator.add", "host", actor_id="h", target="viewer", target_id="v") is None
    assert refusal("mute", "ops", actor_id="o", target="viewer", target_id="o") == "nobody may mute themself"
    assert refusal("comment.delete", "moderator", actor_id="m", target="moderator", target_id="m") is None  # own comment
    assert refusal("chat", "moderator", actor_id="m") is None and refusal("chat", "viewer", actor_id="v") is not None
    assert refusal("shout", "ops", actor_id="o") == "unknown moderation action 'shout'"


def test_roles_in_a_room_and_of_a_target() -> None:
    assert role_in_room(is_ops=True, hosts_room=False, user="o", moderators=set()) == "ops"
    assert role_in_room(is_ops=False, hosts_room=True, user="h", moderators=set()) == "host"
    assert role_in_room(is_ops=False, hosts_room=False, user="m", moderators={"m"}) == "moderator"
    assert role_in_room(is_ops=False, hosts_room=False, user="v", moderators={"m"}) == "viewer"
    assert target_role("h", host="h", moderators=set()) == "host"
    assert target_role("x", host="h", moderators=set(), claimed="ops") == "ops"
    assert target_role("m", host="h", moderators={"m"}) == "moderator"
    assert target_role("v", host="h", moderators={"m"}, claimed="viewer") == "viewer"


# ---------------------------------------------------------------------------- durations
@given(st.sampled_from(sorted(SPANS)), st.one_of(st.none(), st.integers(-5, 4000 * DAY_S)), st.one_of(st.none(), st.booleans()))
def test_a_duration_is_the_default_or_within_what_the_role_may_give(key: tuple[str, Role], seconds: int | None,
                                                                    permanent: bool | None) -> None:
    action, actor = key
    span = SPANS[key]
    try:
        got = duration_s(action, actor, seconds, permanent)
    except (BadFrame, Forbidden):
        assert (seconds is not None and (seconds < 1 or seconds > span.max_s)) or (permanent and (seconds is not None or not span.forever))
        return
    if permanent:
        assert got is None and span.forever
    elif seconds is None:
        assert got == span.default_s
    else:
        assert got == seconds and 1 <= seconds <= span.max_s


def test_durations_by_role() -> None:
    assert duration_s("mute", "moderator") == 600
    assert duration_s("ban", "host") is None and duration_s("ban", "moderator") == DAY_S
    with pytest.raises(Forbidden):
        duration_s("ban", "moderator", permanent=True)  # moderators ban for a while only
    with pytest.raises(Forbidden):
        duration_s("mute", "moderator", 2 * DAY_S)  # the host could: a matter of rank, not of input
    with pytest.raises(BadFrame):
        duration_s("mute", "ops", 31 * DAY_S)
    with pytest.raises(BadFrame):
        duration_s("mute", "ops", True)
    with pytest.raises(Forbidden):
        duration_s("platform.ban", "host")
    assert until_ms(NOW, None) == FOREVER and until_ms(NOW, 10) == NOW + 10_000
    assert active(FOREVER, NOW) and active(NOW + 1, NOW) and not active(NOW, NOW) and not active(None, NOW)


def test_bad_input_names_the_field() -> None:
    cases: list[tuple[Any, str]] = [
        ([], "body must be a JSON object"), ({}, "'user'"), ({"user": ".x"}, "'user'"), ({"user": "u", "seconds": "5"}, "'seconds'"),
        ({"user": "u", "reason": "x" * 201}, "'reason'"), ({"user": "u", "permanent": "yes"}, "'permanent'"),
    ]
    for body, field in cases:
        with pytest.raises(BadFrame) as exc:
            parse_user_action(body, "mute", "host")
        assert field in exc.value.message and exc.value.code == "invalid"
    assert parse_user_action({"user": "u1", "seconds": 30, "reason": " spam "}, "mute", "moderator").reason == "spam"
    for bad in ({"slow_mode_s": 301}, {"slow_mode_s": True}, {"mode": "friends"}, []):
        with pytest.raises(BadFrame):
            parse_chat(bad, ChatSettings())
    assert parse_chat({"mode": "followers"}, ChatSettings(10, "all")) == ChatSettings(10, "followers")


# ---------------------------------------------------------------------- the room's state
changes = st.one_of(
    st.builds(Change, st.sampled_from(["moderator.add", "moderator.remove", "unmute", "unban"]), user=st.sampled_from(["a", "b", "c"])),
    st.builds(Change, st.sampled_from(["mute", "kick", "ban"]), user=st.sampled_from(["a", "b", "c"]),
              until_ms=st.sampled_from([FOREVER, NOW - 1, NOW + 5_000, NOW + 60_000])),
    st.builds(Change, st.just("chat"), slow_mode_s=st.sampled_from([0, 5, 30]), mode=st.sampled_from(["all", "followers", "fanclub"])),
)


def _hash_after(cs: list[Change], start: dict[str, str] | None = None, first_v: int = 1) -> dict[str, str]:
    """The hash after writing ``cs`` in order, version ``first_v`` onwards (as the script)."""
    h = dict(start or {})
    for i, c in enumerate(cs):
        sets, dels = c.fields()
        for f in dels:
            h.pop(f, None)
        h.update(sets)
        h["v"] = str(first_v + i)
    return h


@given(st.lists(changes, max_size=12), st.integers(0, 12), st.randoms(use_true_random=False))
def test_whatever_order_the_events_come_in_a_node_lands_on_the_hash(cs: list[Change], cut: int, rnd: Any) -> None:
    """Changes are written in order (versions 1..n) but announced in any order (the write and
    the publish are two steps); a node read the hash after ``cut`` of them and hears every
    event (some written before its read, in any order): it holds what the hash holds."""
    whole = RoomRules.from_fields(_hash_after(cs), NOW)
    seen = RoomRules.from_fields(_hash_after(cs[:cut]), NOW)
    assert seen.base_v == min(cut, len(cs))
    events = [(c, i + 1) for i, c in enumerate(cs)]
    rnd.shuffle(events)
    for c, v in events:
        seen.apply_versioned(Change.of_event(c.event()) or c, v)
        seen.apply_versioned(c, v)  # a duplicate (its own node applied it first) changes nothing
    seen.prune(NOW)
    assert seen.view(NOW) == whole.view(NOW)


def test_versions_are_trimmed_on_the_writers_clock() -> None:
    r = RoomRules(base_v=10)
    r.apply_versioned(Change("mute", user="a", until_ms=FOREVER), 20)
    r.apply_versioned(Change("mute", user="b", until_ms=FOREVER), 20 + 700_000_000)
    r.trim_versions()
    assert r.base_v == 20 + 100_000_000 and set(r.versions) == {"mute:b"}
    assert r.apply_versioned(Change("unmute", user="a"), 30) == 0  # older than the floor: announced too late
    assert r.mutes == {"a": FOREVER, "b": FOREVER}


def test_an_event_round_trips_and_strangers_are_ignored() -> None:
    for c in (Change("mute", user="u", until_ms=NOW + 1), Change("ban", user="u"), Change("chat", slow_mode_s=5, mode="fanclub")):
        assert Change.of_event(c.event()) == c == Change.of_event({**c.event(), "v": 7})
    assert Change("ban", user="u").event()["until_ms"] is None  # for good
    for d in (None, {}, {"action": "dance"}, {"action": "mute"}, {"action": "mute", "user": "u", "until_ms": "soon"},
              {"action": "chat", "slow_mode_s": 5, "mode": "nobody"}):
        assert Change.of_event(d) is None


# ------------------------------------------------------------------ comments and joins
def test_what_a_comment_meets_in_order() -> None:
    r = RoomRules(mutes={"m": NOW + 60_000}, kicks={"k": NOW + 1000}, bans={"b": FOREVER, "old": NOW - 1}, slow_mode_s=10,
                  chat="followers", moderators={"mod"})

    def judge(user: str, rank: Role = "viewer", *, last: int | None = None, rel: Relation | None = None,
              platform: int | None = None) -> Any:
        got = judge_comment(r, user=user, rank=rank, now_ms=NOW, platform_until=platform, last_ms=last, relation=rel)
        return None if got is None else (got.code, got.details())

    follower = Relation(True, False)
    assert judge("m", rel=follower) == ("muted", {"until_ms": NOW + 60_000})
    assert judge("b") == ("banned", {"until_ms": None})  # for good
    assert judge("k") == ("kicked", {"until_ms": NOW + 1000})
    assert judge("old", rel=follower) is None  # an ended ban is nothing
    assert judge("v") == ("followers_only", {})
    assert judge("v", rel=follower, last=NOW - 4000) == ("slow_mode", {"retry_after_s": 6.0})
    assert judge("v", rel=follower, last=NOW - 10_000) is None
    assert judge("mod", "moderator", last=NOW) is None  # staff skip chat mode and slow mode
    assert judge("m", "host") is None  # a host is never muted (nobody outranks it but ops)
    assert judge("h", "host", platform=FOREVER) == ("banned", {"until_ms": None})
    assert judge("o", "ops", platform=FOREVER) is None
    assert needs_relation(r, "viewer") and not needs_relation(r, "moderator")
    r.chat = "fanclub"
    assert judge("v", rel=follower) == ("fanclub_only", {}) and judge("v", rel=Relation(True, True)) is None
    assert judge_join(r, user="m", rank="viewer", now_ms=NOW, platform_until=None) is None  # a mute does not keep you out
    assert judge_join(r, user="k", rank="viewer", now_ms=NOW, platform_until=None).code == "kicked"  # type: ignore[union-attr]
    assert judge_join(r, user="k", rank="viewer", now_ms=NOW + 1000, platform_until=None) is None  # the kick ran out


@given(st.integers(1, 300), st.integers(0, 400_000))
def test_slow_mode_lets_exactly_one_comment_per_window(slow: int, gap_ms: int) -> None:
    r = RoomRules(slow_mode_s=slow)
    got = judge_comment(r, user="v", rank="viewer", now_ms=NOW + gap_ms, platform_until=None, last_ms=NOW, relation=None)
    assert (got is None) == (gap_ms >= slow * 1000)
    if got is not None:
        assert got.retry_after_s is not None and 0 < got.retry_after_s <= slow
        assert gap_ms + got.retry_after_s * 1000 >= slow * 1000


# ------------------------------------------------------------------------------ reports
def _comments(n: int, start: int = 100) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        out.append({"t": "comment", "seq": start + 2 * i, "ts": i, "d": {"user": f"u{i % 3}", "name": f"U{i % 3}", "text": f"c{i}"}})
        out.append({"t": "gift", "seq": start + 2 * i + 1, "d": {"user": "g"}})
    return out


def test_a_report_carries_the_comment_and_the_few_around_it() -> None:
    evs = _comments(10)
    ctx = report_context(evs, seq=110, user="u2")  # c5
    assert [c["text"] for c in ctx] == ["c2", "c3", "c4", "c5", "c6", "c7", "c8"]
    assert [c["reported"] for c in ctx].count(True) == 1 and ctx[3]["reported"]
    assert [c["text"] for c in report_context(evs, seq=100, user="u0")] == ["c0", "c1", "c2", "c3"]
    assert report_context(evs, seq=999, user="u0") == []
    assert [c["text"] for c in report_context(evs, seq=None, user="u1")] == ["c1", "c4", "c7"]


def test_reports_and_resolutions_are_checked() -> None:
    assert parse_report({"seq": 5, "reason": "spam"}).seq == 5
    assert parse_report({"user": "u1", "reason": "abuse", "note": "again"}).user == "u1"
    for bad in ({"reason": "spam"}, {"seq": 0, "reason": "spam"}, {"seq": 5, "reason": "boring"}, {"seq": True, "reason": "spam"},
                {"user": "u", "reason": "spam", "note": "x" * 501}, "report"):
        with pytest.raises(BadFrame):
            parse_report(bad)
    assert parse_resolution({"action": "mute", "seconds": 60}, "moderator").seconds == 60
    assert parse_resolution({"action": "dismiss"}, "moderator").action == "dismiss"
    with pytest.raises(BadFrame):
        parse_resolution({"action": "dismiss", "seconds": 5}, "host")
    with pytest.raises(BadFrame):
        parse_resolution({"action": "explode"}, "host")
    with pytest.raises(Forbidden):
        parse_resolution({"action": "ban", "permanent": True}, "moderator")


# ----------------------------------------------------------------- the Redis adapter
async def test_changes_write_the_hash_and_ended_entries_go(redis: Any, keys: Keys) -> None:
    mod = RedisModeration(redis, keys)
    await mod.apply("r1", Change("moderator.add", user="m1"), now_ms=NOW)
    await mod.apply("r1", Change("mute", user="v1", until_ms=NOW + 5_000), now_ms=NOW)
    await mod.apply("r1", Change("ban", user="v2"), now_ms=NOW)
    await mod.apply("r1", Change("chat", slow_mode_s=10, mode="followers"), now_ms=NOW)
    got = RoomRules.from_fields(await mod.load("r1"), NOW)
    assert got.base_v > 1_700_000_000_000_000  # microseconds from the server's clock
    assert got.view(NOW) == {"moderators": ["m1"], "mutes": [{"user": "v1", "until_ms": NOW + 5_000}], "kicks": [],
                             "bans": [{"user": "v2", "until_ms": None}], "slow_mode_s": 10, "chat": "followers"}
    assert await redis.ttl(mod.room_key("r1")) == -1  # a moderator, settings, a for-good ban: kept
    # the mute ends; the next change prunes it
    await mod.apply("r1", Change("kick", user="v3", until_ms=NOW + 60_000), now_ms=NOW + 6_000)
    assert "mute:v1" not in await mod.load("r1")
    # with only timed entries left, the hash expires after the last one ends
    for c in (Change("moderator.remove", user="m1"), Change("unban", user="v2"), Change("chat")):
        await mod.apply("r1", c, now_ms=NOW + 6_000)
    assert set(await mod.load("r1")) == {"kick:v3", "v"}
    assert 0 < await redis.pttl(mod.room_key("r1"))
    # each change has a higher version than the last, even when the clock would give less
    await redis.hset(mod.room_key("r1"), "v", str(5 * 10**15))
    first = await mod.apply("r1", Change("mute", user="v4", until_ms=NOW + 90_000), now_ms=NOW + 6_000)
    second = await mod.apply("r1", Change("unmute", user="v4"), now_ms=NOW + 6_000)
    assert 5 * 10**15 < first < second


async def test_a_room_has_at_most_fifty_moderators(redis: Any, keys: Keys) -> None:
    mod = RedisModeration(redis, keys)
    for i in range(50):
        await mod.apply("r1", Change("moderator.add", user=f"m{i}"), now_ms=NOW)
    await mod.apply("r1", Change("moderator.add", user="m3"), now_ms=NOW)  # already one: fine
    with pytest.raises(Conflict) as exc:
        await mod.apply("r1", Change("moderator.add", user="m50"), now_ms=NOW)
    assert exc.value.code == "too_many_moderators"


async def test_platform_bans(redis: Any, keys: Keys) -> None:
    mod = RedisModeration(redis, keys)
    await mod.platform_ban("u1", FOREVER, now_ms=NOW)
    await mod.platform_ban("u2", NOW + 1000, now_ms=NOW)
    bans, v1 = await mod.platform()
    assert bans == {"u1": FOREVER, "u2": NOW + 1000}
    v2 = await mod.platform_ban("u1", None, now_ms=NOW)
    bans, v = await mod.platform()
    assert bans == {"u2": NOW + 1000} and v == v2 > v1


async def test_the_fan_cache_keeps_followers(redis: Any, keys: Keys) -> None:
    fans = FanclubRedis(redis, keys)
    await fans.put([{"host_id": "h1", "user_id": "f", "following": True, "member": False, "intimacy": 0},
                    {"host_id": "h1", "user_id": "m", "following": True, "member": True, "intimacy": 30}])
    assert await fans.relation("h1", "f") == (True, False)
    assert await fans.relation("h1", "m") == (True, True)
    assert await fans.relation("h1", "x") == (False, False)
    await fans.put([{"host_id": "h1", "user_id": "f", "following": False, "member": False, "intimacy": 0}])
    assert await fans.relation("h1", "f") == (False, False)
    await fans.forget("m", ["h1"])
    assert await fans.relation("h1", "m") == (False, False)
