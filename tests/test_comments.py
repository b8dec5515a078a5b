"""Comment rules: token bucket, flood guard, moderation (Aho-Corasick against a naive scan)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from livecommerce.comments import FloodGuard, Moderator, TokenBucket, judge_comment


def test_token_bucket_allows_the_burst_then_the_rate():
    b = TokenBucket(rate=2.0, burst=3)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.take(0.5) is True  # one token refilled after half a second
    assert b.take(0.5) is False


def test_flood_guard_strikes_after_limit_within_window():
    g = FloodGuard(limit=3, window=10)
    assert [g.strike(t) for t in (0, 1, 2)] == [False, False, True]
    g2 = FloodGuard(limit=3, window=1)
    assert [g2.strike(t) for t in (0, 5, 10)] == [False, False, False]


def test_moderator_finds_overlapping_words_case_insensitively():
    m = Moderator(["he", "she", "his", "hers"])
    spans = sorted(m.spans("uSHErs"))
    assert spans == [(1, 4), (2, 4), (2, 6)]
    assert m.mask("uSHErs") == "u*****"


@given(
    st.lists(st.text(alphabet="abc", min_size=1, max_size=4), min_size=1, max_size=6),
    st.text(alphabet="abcd", max_size=40),
)
def test_aho_corasick_agrees_with_a_naive_scan(words, text):
    m = Moderator(words)
    naive = {(i, i + len(w)) for w in set(words) for i in range(len(text)) if text.startswith(w, i)}
    assert set(m.spans(text)) == naive


def test_judge_blocks_or_masks_by_mode():
    m = Moderator(["scam"])
    assert judge_comment("a SCAM!", max_len=50, moderator=m, mode="block") == ("moderated", "")
    assert judge_comment("a SCAM!", max_len=50, moderator=m, mode="mask") == ("ok", "a ****!")
    assert judge_comment("   ", max_len=50, moderator=m, mode="block")[0] == "empty"
    assert judge_comment("x" * 51, max_len=50, moderator=m, mode="block")[0] == "too_long"
    assert judge_comment(" fine ", max_len=50, moderator=m, mode="block") == ("ok", "fine")


def test_packaged_word_list_loads():
    assert Moderator.from_file().spans("this is a scam")
