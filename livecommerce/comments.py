"""Bullet comments: length limit, per-user token bucket, moderation filter.

Pure: the clock is an argument. The moderation filter is an Aho-Corasick automaton over a
word list, so a comment is scanned once whatever the size of the list.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Literal

Verdict = Literal["ok", "too_long", "empty", "moderated"]


@dataclass(slots=True)
class TokenBucket:
    """Classic token bucket: ``rate`` tokens per second up to ``burst``."""

    rate: float
    burst: float
    tokens: float = -1.0
    at: float = 0.0

    def full(self, now: float) -> bool:
        """True when the bucket has refilled to ``burst``: it is then the same as a new one
        (so a cache of buckets may drop it)."""
        return self.tokens < 0 or self.tokens + (now - self.at) * self.rate >= self.burst

    def take(self, now: float, n: float = 1.0) -> bool:
        if self.tokens < 0:
            self.tokens, self.at = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


@dataclass(slots=True)
class FloodGuard:
    """Counts rejected commands; ``strike`` says True once a client keeps flooding
    (``limit`` rejections within ``window`` seconds) and must be closed with 4429."""

    limit: int
    window: float
    hits: deque[float] = field(default_factory=deque)

    def strike(self, now: float) -> bool:
        self.hits.append(now)
        while self.hits and self.hits[0] < now - self.window:
            self.hits.popleft()
        return len(self.hits) >= self.limit


class Moderator:
    """Aho-Corasick matcher over lower-cased words.

    ``check`` returns the spans of blocked words; ``mask`` replaces them with ``*``.
    """

    def __init__(self, words: list[str]) -> None:
        self._goto: list[dict[str, int]] = [{}]
        self._fail: list[int] = [0]
        self._out: list[list[int]] = [[]]  # lengths of words ending here
        for w in words:
            w = w.strip().lower()
            if w and not w.startswith("#"):
                self._add(w)
        self._build()

    @classmethod
    def from_file(cls, path: str = "") -> Moderator:
        text = (
            Path(path).read_text(encoding="utf-8")
            if path
            else (files("livecommerce") / "data" / "moderation.txt").read_text(encoding="utf-8")
        )
        return cls(text.splitlines())

    def _add(self, word: str) -> None:
        node = 0
        for ch in word:
            nxt = self._goto[node].get(ch)
            if nxt is None:
                nxt = len(self._goto)
                self._goto[node][ch] = nxt
                self._goto.append({})
                self._fail.append(0)
                self._out.append([])
            node = nxt
        self._out[node].append(len(word))

    def _build(self) -> None:
        queue: deque[int] = deque(self._goto[0].values())
        while queue:
            node = queue.popleft()
            for ch, nxt in self._goto[node].items():
                queue.append(nxt)
                f = self._fail[node]
                while f and ch not in self._goto[f]:
                    f = self._fail[f]
                cand = self._goto[f].get(ch, 0)
                self._fail[nxt] = cand if cand != nxt else 0
                self._out[nxt] = self._out[nxt] + self._out[self._fail[nxt]]

    def spans(self, text: str) -> list[tuple[int, int]]:
        node = 0
        found: list[tuple[int, int]] = []
        for i, ch in enumerate(text.lower()):
            while node and ch not in self._goto[node]:
                node = self._fail[node]
            node = self._goto[node].get(ch, 0)
            for length in self._out[node]:
                found.append((i - length + 1, i + 1))
        return found

    def mask(self, text: str) -> str:
        chars = list(text)
        for a, b in self.spans(text):
            for i in range(a, b):
                chars[i] = "*"
        return "".join(chars)


def judge_comment(
    text: str, *, max_len: int, moderator: Moderator, mode: str
) -> tuple[Verdict, str]:
    """Decide a comment: ``("ok", text_to_broadcast)`` or a rejection code.

    ``mode`` is ``block`` (blocked words reject the comment with ``moderated``) or ``mask``
    (blocked words are replaced by asterisks and the comment goes out).
    """
    text = text.strip()
    if not text:
        return "empty", ""
    if len(text) > max_len:
        return "too_long", ""
    if moderator.spans(text):
        if mode == "mask":
            return "ok", moderator.mask(text)
        return "moderated", ""
    return "ok", text
