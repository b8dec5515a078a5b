"""Room moderation (房管): who may do what to whom, for how long, and what a comment or a
join meets in a moderated room. Pure: the clock is an argument, no I/O.

**Roles.** In one room a user is ``ops`` (the token's role), ``host`` (a host token that
lists the room; as a *target*, the room's recorded host), ``moderator`` (appointed by the
host or ops for that room) or ``viewer``. Ranks rise in that order (:data:`RANK`).

**Who may do what** (:data:`ACTIONS`, :func:`refusal`):

* appoint and remove moderators: the host, ops;
* mute, unmute, kick, ban and unban in the room, delete a comment, set slow mode and the
  chat mode, resolve reports: moderators, the host, ops;
* ban or unban on the whole platform: ops only;
* an action on a user needs a rank strictly above the target's (a moderator cannot touch
  the host or another moderator; the host cannot touch ops); nobody acts on themself, except
  deleting their own comment.

**How long** (:func:`duration_s`): a mute lasts 1 s .. 24 h when a moderator gives it, up to
30 days from the host or ops, 10 minutes by default; a kick closes the user's connections in
the room and refuses them again for 10 minutes by default (at most 24 h); a room ban lasts
for good by default when the host or ops give it, and at most 7 days (1 day by default) from
a moderator; a platform ban (ops) lasts for good by default. ``until_ms`` 0 means for good.

**What a comment meets** (:func:`judge_comment`), first refusal wins: a platform ban
(``banned``; ops are exempt), then, for anyone below the host, a room ban (``banned``), a
kick still running (``kicked``), a mute (``muted`` with ``until_ms``); then, for viewers
only, the chat mode (``followers_only``: follow the host or be in its fan club;
``fanclub_only``: be a member) and slow mode (``slow_mode`` with ``retry_after_s``: one
comment per ``slow_mode_s`` per viewer). A join (:func:`judge_join`) meets the bans and the
kick. A muted user still watches, likes, sends gifts and buys: a mute is about chat.

**State.** A room's moderation is :class:`RoomRules`; every change is a :class:`Change`:
the fields it sets and deletes in the room's moderation hash (:meth:`Change.fields`), and
the ``moderation`` room event every node applies to its copy. The script that writes a
change gives it a version (``v``: above every earlier one, seeded from the clock) and the
event carries it; a node applies a field only when the event's version is above the one it
holds for that field (:meth:`RoomRules.apply_versioned`; the hash's own ``v`` when read).
The write and the event are two steps, so two changes written A then B may be announced B
then A: versions make every node land on what the hash holds whatever the order, and a
node that loads the hash and then applies the events that arrived meanwhile lands there too.

**Reports** (:func:`parse_report`, :func:`report_context`, :func:`parse_resolution`) and the
**audit record** (:class:`AuditEntry`) are here too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from .errors import BadFrame, Forbidden

Role = Literal["viewer", "moderator", "host", "ops"]
RANK: dict[Role, int] = {"viewer": 0, "moderator": 1, "host": 2, "ops": 3}
ChatMode = Literal["all", "followers", "fanclub"]
CHAT_MODES: tuple[ChatMode, ...] = ("all", "followers", "fanclub")

MINUTE_S = 60
HOUR_S = 3600
DAY_S = 86400
MAX_SLOW_MODE_S = 300
MAX_MODERATORS = 50  # per room
MAX_REASON = 200  # characters of a moderator's reason
MAX_NOTE = 500  # characters of a reporter's note
FOREVER = 0  # ``until_ms`` of a ban for good


@dataclass(frozen=True, slots=True)
class ActionRule:
    """``least``: the lowest role that may take the action; ``on_user``: the action names a
    user whose rank must be below the actor's."""

    least: Role
    on_user: bool


ACTIONS: dict[str, ActionRule] = {
    "moderator.add": ActionRule("host", True),
    "moderator.remove": ActionRule("host", True),
    "mute": ActionRule("moderator", True),
    "unmute": ActionRule("moderator", True),
    "kick": ActionRule("moderator", True),
    "ban": ActionRule("moderator", True),
    "unban": ActionRule("moderator", True),
    "comment.delete": ActionRule("moderator", True),
    "chat": ActionRule("moderator", False),
    "report.resolve": ActionRule("moderator", False),
    "platform.ban": ActionRule("ops", True),
    "platform.unban": ActionRule("ops", True),
}

#: the actions that change a room's state (the ``moderation`` event's ``action``)
ROOM_CHANGES = frozenset({"moderator.add", "moderator.remove", "mute", "unmute", "kick", "ban", "unban", "chat"})


def role_in_room(*, is_ops: bool, hosts_room: bool, user: str, moderators: Iterable[str] | set[str]) -> Role:
    """The role of a signed-in user in a room: ops, the host (a host token listing the room),
    a moderator of the room, else a viewer."""
    if is_ops:
        return "ops"
    if hosts_room:
        return "host"
    return "moderator" if user in moderators else "viewer"


def target_role(user: str, *, host: str, moderators: Iterable[str] | set[str], claimed: str = "") -> Role:
    """The role of a user someone acts on: the room's recorded ``host``, a moderator, else a
    viewer. ``claimed`` is the role a comment carries (``ops`` or ``host`` when its author
    wrote it with such a token), which the target keeps when it ranks higher."""
    if claimed == "ops":
        return "ops"
    if user == host or claimed == "host":
        return "host"
    return "moderator" if user in moderators else "viewer"


def refusal(action: str, actor: Role, *, actor_id: str, target: Role | None = None, target_id: str = "") -> str | None:
    """None when ``actor`` may take ``action`` (on ``target_id`` of role ``target``), else
    why not (a sentence for the ``forbidden`` error)."""
    rule = ACTIONS.get(action)
    if rule is None:
        return f"unknown moderation action {action!r}"
    if RANK[actor] < RANK[rule.least]:
        who = {"ops": "ops", "host": "the host or ops", "moderator": "moderators, the host or ops"}[rule.least]
        return f"only {who} may {action}"
    if not rule.on_user:
        return None
    if target_id == actor_id:
        return None if action == "comment.delete" else f"nobody may {action} themself"
    if target is not None and RANK[target] >= RANK[actor]:
        return f"a {actor} may not {action} a {target}"
    return None


def require(action: str, actor: Role, *, actor_id: str, target: Role | None = None, target_id: str = "") -> None:
    """Raises:
    Forbidden: :func:`refusal` says why not.
    """
    why = refusal(action, actor, actor_id=actor_id, target=target, target_id=target_id)
    if why is not None:
        raise Forbidden(why)


# ---------------------------------------------------------------------------- durations
@dataclass(frozen=True, slots=True)
class Span:
    """How long an action lasts: ``default_s`` (None: for good) and the longest a role may
    give (``max_s``; ``forever`` says whether it may give "for good")."""

    default_s: int | None
    max_s: int
    forever: bool


SPANS: dict[tuple[str, Role], Span] = {
    ("mute", "moderator"): Span(10 * MINUTE_S, DAY_S, False),
    ("mute", "host"): Span(10 * MINUTE_S, 30 * DAY_S, False),
    ("mute", "ops"): Span(10 * MINUTE_S, 30 * DAY_S, False),
    ("kick", "moderator"): Span(10 * MINUTE_S, DAY_S, False),
    ("kick", "host"): Span(10 * MINUTE_S, DAY_S, False),
    ("kick", "ops"): Span(10 * MINUTE_S, DAY_S, False),
    ("ban", "moderator"): Span(DAY_S, 7 * DAY_S, False),
    ("ban", "host"): Span(None, 365 * DAY_S, True),
    ("ban", "ops"): Span(None, 365 * DAY_S, True),
    ("platform.ban", "ops"): Span(None, 3650 * DAY_S, True),
}


def duration_s(action: str, actor: Role, seconds: Any = None, permanent: Any = None) -> int | None:
    """The length of a mute, kick or ban in seconds (None: for good) from the request's
    ``seconds`` (absent: the default) and ``permanent`` (true: for good).

    Raises:
        BadFrame: (``invalid``) not a whole number of seconds in range, or both given.
        Forbidden: ``actor`` may not give that long (or for good).
    """
    span = SPANS.get((action, actor))
    if span is None:
        raise Forbidden(f"a {actor} may not {action}")
    if permanent is not None and not isinstance(permanent, bool):
        raise BadFrame("'permanent' must be true or false", code="invalid")
    if permanent:
        if seconds is not None:
            raise BadFrame("give 'seconds' or 'permanent', not both", code="invalid")
        if not span.forever:
            raise Forbidden(f"a {actor} may {action} for at most {span.max_s} s, not for good")
        return None
    if seconds is None:
        return span.default_s
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
        raise BadFrame("'seconds' must be a whole number of seconds, at least 1", code="invalid")
    if seconds > span.max_s:
        if actor != "ops" and SPANS.get((action, "ops"), span).max_s >= seconds:
            raise Forbidden(f"a {actor} may {action} for at most {span.max_s} s")
        raise BadFrame(f"'seconds' must be at most {span.max_s}", code="invalid")
    return seconds


def until_ms(now_ms: int, seconds: int | None) -> int:
    """When an action given for ``seconds`` (None: for good) ends; :data:`FOREVER` is 0."""
    return FOREVER if seconds is None else now_ms + seconds * 1000


def active(until: int | None, now_ms: int) -> bool:
    """Whether a mute, kick or ban ending at ``until`` still holds at ``now_ms``."""
    return until is not None and (until == FOREVER or until > now_ms)


def wire_until(until: int) -> int | None:
    """``until_ms`` as clients see it: None for good."""
    return None if until == FOREVER else until


# --------------------------------------------------------------------------- input rules
def check_user(v: Any, name: str = "user") -> str:
    """Raises:
    BadFrame: (``invalid``) not a user id (1..64 letters, digits and ``_ @ : - .``).
    """
    if (not isinstance(v, str) or not 0 < len(v) <= 64 or v[0] == "."
            or not all((c.isalnum() and c.isascii()) or c in "_@:-." for c in v)):
        raise BadFrame(f"'{name}' must be a user id: 1..64 letters, digits and _ @ : - .", code="invalid")
    return v


def check_reason(v: Any, name: str = "reason", limit: int = MAX_REASON) -> str:
    """Raises:
    BadFrame: (``invalid``) not text of at most ``limit`` characters.
    """
    if v is None:
        return ""
    if not isinstance(v, str) or len(v) > limit:
        raise BadFrame(f"'{name}' must be text of at most {limit} characters", code="invalid")
    return v.strip()


@dataclass(frozen=True, slots=True)
class UserAction:
    """A mute, kick or ban asked for: whom, for how long (None: for good), why."""

    user: str
    seconds: int | None
    reason: str


def parse_user_action(body: Any, action: str, actor: Role) -> UserAction:
    """``{user, seconds?, permanent?, reason?}`` of a mute, kick, ban or platform ban.

    Raises:
        BadFrame: (``invalid``) naming the field. Forbidden: a length the actor may not give.
    """
    if not isinstance(body, dict):
        raise BadFrame("body must be a JSON object", code="invalid")
    user = check_user(body.get("user"))
    return UserAction(user, duration_s(action, actor, body.get("seconds"), body.get("permanent")),
                      check_reason(body.get("reason")))


@dataclass(frozen=True, slots=True)
class ChatSettings:
    slow_mode_s: int = 0
    mode: ChatMode = "all"


def parse_chat(body: Any, current: ChatSettings) -> ChatSettings:
    """``{slow_mode_s?, mode?}``: the room's chat settings after the change (a field left
    out keeps its value). ``slow_mode_s`` 0 turns slow mode off.

    Raises:
        BadFrame: (``invalid``) naming the field.
    """
    if not isinstance(body, dict):
        raise BadFrame("body must be a JSON object", code="invalid")
    slow, mode = body.get("slow_mode_s", current.slow_mode_s), body.get("mode", current.mode)
    if isinstance(slow, bool) or not isinstance(slow, int) or not 0 <= slow <= MAX_SLOW_MODE_S:
        raise BadFrame(f"'slow_mode_s' must be a whole number of seconds in 0..{MAX_SLOW_MODE_S}", code="invalid")
    if mode not in CHAT_MODES:
        raise BadFrame(f"'mode' must be one of {', '.join(CHAT_MODES)}", code="invalid")
    return ChatSettings(slow, cast(ChatMode, mode))


# ---------------------------------------------------------------------- a room's state
@dataclass(frozen=True, slots=True)
class Change:
    """One change of a room's moderation: the ``moderation`` event's ``d`` and the fields it
    writes. ``until_ms`` is :data:`FOREVER` (0) for good."""

    action: str  # one of ROOM_CHANGES
    user: str = ""
    until_ms: int = FOREVER
    slow_mode_s: int = 0
    mode: ChatMode = "all"
    by_role: Role = "moderator"

    def event(self) -> dict[str, Any]:
        """The ``moderation`` event's ``d`` (``until_ms`` None: for good)."""
        d: dict[str, Any] = {"action": self.action, "by_role": self.by_role}
        if self.action == "chat":
            d["slow_mode_s"], d["mode"] = self.slow_mode_s, self.mode
        else:
            d["user"] = self.user
        if self.action in ("mute", "kick", "ban"):
            d["until_ms"] = wire_until(self.until_ms)
        return d

    @classmethod
    def of_event(cls, d: Any) -> Change | None:
        """The change a ``moderation`` event carries; None when it is not one this node
        understands (malformed, or a newer node's action)."""
        if not isinstance(d, dict) or d.get("action") not in ROOM_CHANGES:
            return None
        action = str(d["action"])
        by = d.get("by_role")
        by_role = cast(Role, by) if by in RANK else "moderator"
        if action == "chat":
            slow, mode = d.get("slow_mode_s"), d.get("mode")
            if not isinstance(slow, int) or mode not in CHAT_MODES:
                return None
            return cls(action, slow_mode_s=slow, mode=cast(ChatMode, mode), by_role=by_role)
        user, until = d.get("user"), d.get("until_ms")
        if not isinstance(user, str) or not user:
            return None
        if until is not None and not isinstance(until, int):
            return None
        return cls(action, user=user, until_ms=FOREVER if until is None else until, by_role=by_role)

    def fields(self) -> tuple[dict[str, str], list[str]]:
        """``(fields to set, fields to delete)`` in the room's moderation hash."""
        u = self.user
        return {
            "moderator.add": ({f"m:{u}": "1"}, []),
            "moderator.remove": ({}, [f"m:{u}"]),
            "mute": ({f"mute:{u}": str(self.until_ms)}, []),
            "unmute": ({}, [f"mute:{u}"]),
            "kick": ({f"kick:{u}": str(self.until_ms)}, []),
            "ban": ({f"ban:{u}": str(self.until_ms)}, []),
            "unban": ({}, [f"ban:{u}", f"kick:{u}"]),
            "chat": ({}, []),
        }[self.action] if self.action != "chat" else self._chat_fields()

    def _chat_fields(self) -> tuple[dict[str, str], list[str]]:
        sets: dict[str, str] = {}
        dels: list[str] = []
        for f, v, off in (("slow", str(self.slow_mode_s), self.slow_mode_s == 0), ("chat", self.mode, self.mode == "all")):
            if off:
                dels.append(f)  # a setting back at its default leaves the hash (it may then expire)
            else:
                sets[f] = v
        return sets, dels


#: hash fields whose value is an ``until_ms`` (pruned once over)
TIMED_PREFIXES = ("mute:", "kick:", "ban:")


#: the hash field holding the version of the latest change
VERSION_FIELD = "v"
VERSION_KEEP = 600 * 1_000_000  # versions are microseconds: ten minutes


@dataclass
class RoomRules:
    """One room's moderation as a node holds it: the hash's fields, parsed, with the
    version of the read (``base_v``) and of each field changed since (``versions``)."""

    moderators: set[str] = field(default_factory=set)
    mutes: dict[str, int] = field(default_factory=dict)  # user -> until_ms (0: for good)
    kicks: dict[str, int] = field(default_factory=dict)
    bans: dict[str, int] = field(default_factory=dict)
    slow_mode_s: int = 0
    chat: ChatMode = "all"
    base_v: int = 0
    versions: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_fields(cls, fields: Mapping[str, str], now_ms: int) -> RoomRules:
        """The state a room's moderation hash holds (ended entries left out; unreadable
        fields ignored), at the hash's version."""
        r = cls()
        for k, v in fields.items():
            if k == VERSION_FIELD:
                try:
                    r.base_v = int(v)
                except ValueError:
                    pass
            else:
                r.set_field(k, v, now_ms)
        return r

    def set_field(self, k: str, v: str, now_ms: int | None = None) -> None:
        """What one hash field set to ``v`` means (an ended entry, with ``now_ms``, or an
        unreadable value leaves nothing)."""
        kind, _, user = k.partition(":")
        if kind == "m" and user:
            self.moderators.add(user)
        elif kind in ("mute", "kick", "ban") and user:
            try:
                until = int(v)
            except ValueError:
                return
            if now_ms is None or active(until, now_ms):
                {"mute": self.mutes, "kick": self.kicks, "ban": self.bans}[kind][user] = until
        elif k == "slow":
            try:
                self.slow_mode_s = max(0, min(MAX_SLOW_MODE_S, int(v)))
            except ValueError:
                pass
        elif k == "chat" and v in CHAT_MODES:
            self.chat = v

    def del_field(self, k: str) -> None:
        """What deleting one hash field means."""
        kind, _, user = k.partition(":")
        if kind == "m":
            self.moderators.discard(user)
        elif kind in ("mute", "kick", "ban"):
            {"mute": self.mutes, "kick": self.kicks, "ban": self.bans}[kind].pop(user, None)
        elif k == "slow":
            self.slow_mode_s = 0
        elif k == "chat":
            self.chat = "all"

    def apply(self, c: Change) -> None:
        """Apply one change as its fields do to the hash (no version: it wins)."""
        sets, dels = c.fields()
        for k in dels:
            self.del_field(k)
        for k, v in sets.items():
            self.set_field(k, v)

    def apply_versioned(self, c: Change, v: int) -> int:
        """Apply the fields of change ``c`` written at version ``v`` that no later change
        (nor the read) has written since; return how many fields it changed."""
        sets, dels = c.fields()
        n = 0
        for k in dels:
            if v > max(self.base_v, self.versions.get(k, 0)):
                self.del_field(k)
                self.versions[k] = v
                n += 1
        for k, val in sets.items():
            if v > max(self.base_v, self.versions.get(k, 0)):
                self.set_field(k, val)
                self.versions[k] = v
                n += 1
        return n

    def trim_versions(self, keep: int = VERSION_KEEP) -> None:
        """Forget field versions more than ``keep`` below the newest one (no change written
        that long before another is still to be announced), raising ``base_v`` to that
        floor, so the map stays small. Versions are the writing script's clock (µs), so the
        floor is measured on it, not on this node's clock."""
        if not self.versions:
            return
        floor = max(self.versions.values()) - keep
        if floor > self.base_v:
            self.versions = {k: v for k, v in self.versions.items() if v >= floor}
            self.base_v = floor

    def prune(self, now_ms: int) -> int:
        """Drop mutes, kicks and bans that ended; return how many."""
        n = 0
        for d in (self.mutes, self.kicks, self.bans):
            gone = [u for u, t in d.items() if not active(t, now_ms)]
            for u in gone:
                del d[u]
            n += len(gone)
        return n

    @property
    def settings(self) -> ChatSettings:
        return ChatSettings(self.slow_mode_s, self.chat)

    def view(self, now_ms: int) -> dict[str, Any]:
        """What the room's staff see (``GET .../moderation``)."""

        def listing(d: dict[str, int]) -> list[dict[str, Any]]:
            return [{"user": u, "until_ms": wire_until(t)} for u, t in sorted(d.items()) if active(t, now_ms)]

        return {
            "moderators": sorted(self.moderators), "mutes": listing(self.mutes), "kicks": listing(self.kicks),
            "bans": listing(self.bans), "slow_mode_s": self.slow_mode_s, "chat": self.chat,
        }

    def is_empty(self) -> bool:
        return not (self.moderators or self.mutes or self.kicks or self.bans or self.slow_mode_s or self.chat != "all")


# ---------------------------------------------------------------- comments and joins
@dataclass(frozen=True, slots=True)
class Relation:
    """What a viewer is to the room's host: a follower, a fan-club member (who follows too)."""

    following: bool
    member: bool


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a comment or a join is refused: the wire code, a sentence, and when to try
    again (``until_ms``: the mute, kick or ban's end, None for good; ``retry_after_s``)."""

    code: str  # muted | banned | kicked | slow_mode | followers_only | fanclub_only
    message: str
    until_ms: int | None = None
    retry_after_s: float | None = None
    for_good: bool = False

    def details(self) -> dict[str, Any]:
        """The error frame's fields beyond code and message."""
        out: dict[str, Any] = {}
        if self.until_ms is not None or self.for_good:
            out["until_ms"] = self.until_ms
        if self.retry_after_s is not None:
            out["retry_after_s"] = self.retry_after_s
        return out


def _timed(code: str, what: str, until: int) -> Refusal:
    if until == FOREVER:
        return Refusal(code, f"{what} for good", None, for_good=True)
    return Refusal(code, f"{what} until {until} (epoch ms)", until)


def _standing(rules: RoomRules, *, user: str, rank: Role, now_ms: int, platform_until: int | None,
              mutes: bool) -> Refusal | None:
    if rank == "ops":
        return None
    if active(platform_until, now_ms):
        return _timed("banned", "banned from the platform", cast(int, platform_until))
    if RANK[rank] >= RANK["host"]:
        return None
    until = rules.bans.get(user)
    if active(until, now_ms):
        return _timed("banned", "banned from this room", cast(int, until))
    until = rules.kicks.get(user)
    if active(until, now_ms):
        return _timed("kicked", "kicked from this room", cast(int, until))
    if mutes:
        until = rules.mutes.get(user)
        if active(until, now_ms):
            return _timed("muted", "muted in this room", cast(int, until))
    return None


def judge_join(rules: RoomRules, *, user: str, rank: Role, now_ms: int, platform_until: int | None) -> Refusal | None:
    """None when ``user`` may join the room; else ``banned`` or ``kicked``."""
    return _standing(rules, user=user, rank=rank, now_ms=now_ms, platform_until=platform_until, mutes=False)


def needs_relation(rules: RoomRules, rank: Role) -> bool:
    """Whether judging a comment of a ``rank`` needs the author's :class:`Relation` to the host."""
    return rules.chat != "all" and rank == "viewer"


def judge_comment(rules: RoomRules, *, user: str, rank: Role, now_ms: int, platform_until: int | None,
                  last_ms: int | None, relation: Relation | None) -> Refusal | None:
    """None when the comment may go out; else the first refusal (see the module's rules).

    ``last_ms``: when this user's previous comment in the room went out (slow mode);
    ``relation``: needed when :func:`needs_relation` says so (None then reads as neither).
    """
    got = _standing(rules, user=user, rank=rank, now_ms=now_ms, platform_until=platform_until, mutes=True)
    if got is not None or rank != "viewer":
        return got
    if rules.chat != "all":
        rel = relation or Relation(False, False)
        if rules.chat == "fanclub" and not rel.member:
            return Refusal("fanclub_only", "only members of the host's fan club may comment now")
        if rules.chat == "followers" and not (rel.following or rel.member):
            return Refusal("followers_only", "only followers of the host may comment now")
    if rules.slow_mode_s and last_ms is not None:
        wait_ms = last_ms + rules.slow_mode_s * 1000 - now_ms
        if wait_ms > 0:
            return Refusal("slow_mode", f"slow mode: one comment per {rules.slow_mode_s} s",
                           retry_after_s=math.ceil(wait_ms / 100) / 10)
    return None


# ------------------------------------------------------------------------------ reports
REPORT_REASONS = ("spam", "abuse", "harassment", "hate", "sexual", "violence", "fraud", "illegal", "other")
REPORT_STATES = ("open", "resolved", "dismissed")
RESOLUTIONS = ("dismiss", "delete", "mute", "kick", "ban")
CONTEXT_AROUND = 3  # comments kept on each side of a reported comment
CONTEXT_BY_USER = 5  # a reported user's latest comments kept
CONTEXT_WINDOW = 40  # history events read on each side of a reported comment


@dataclass(frozen=True, slots=True)
class ReportAsk:
    """A viewer's report: a comment (by its ``seq``) or a user, a reason and a note."""

    seq: int | None
    user: str | None
    reason: str
    note: str


def parse_report(body: Any) -> ReportAsk:
    """``{seq?, user?, reason, note?}``: at least one of ``seq`` (a comment) and ``user``.

    Raises:
        BadFrame: (``invalid``) naming the field.
    """
    if not isinstance(body, dict):
        raise BadFrame("body must be a JSON object", code="invalid")
    seq, user = body.get("seq"), body.get("user")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or not 0 < seq < 2**63):
        raise BadFrame("'seq' must be the reported comment's seq (a positive integer)", code="invalid")
    if user is not None:
        check_user(user)
    if seq is None and user is None:
        raise BadFrame("report a comment ('seq') or a user ('user')", code="invalid")
    reason = body.get("reason")
    if reason not in REPORT_REASONS:
        raise BadFrame(f"'reason' must be one of {', '.join(REPORT_REASONS)}", code="invalid")
    return ReportAsk(seq, user, str(reason), check_reason(body.get("note"), "note", MAX_NOTE))


def comment_view(env: Mapping[str, Any]) -> dict[str, Any]:
    """A ``comment`` room event as a report shows it."""
    d = env.get("d") or {}
    return {"seq": env.get("seq"), "ts": env.get("ts"), "user": d.get("user"), "name": d.get("name"), "text": d.get("text")}


def report_context(events: Iterable[Mapping[str, Any]], *, seq: int | None, user: str,
                   around: int = CONTEXT_AROUND, by_user: int = CONTEXT_BY_USER) -> list[dict[str, Any]]:
    """The comments a report shows its moderators, from the room's history ``events``: the
    reported comment (``seq``) with up to ``around`` comments before and after it, or, for a
    report of a user, that user's latest ``by_user`` comments."""
    comments = [e for e in events if e.get("t") == "comment" and isinstance(e.get("d"), dict)]
    if seq is None:
        return [comment_view(e) for e in [e for e in comments if e["d"].get("user") == user][-by_user:]]
    at = next((i for i, e in enumerate(comments) if e.get("seq") == seq), None)
    if at is None:
        return []
    return [{**comment_view(e), "reported": e.get("seq") == seq} for e in comments[max(0, at - around) : at + around + 1]]


@dataclass(frozen=True, slots=True)
class Resolution:
    """How a moderator closes a report: ``dismiss`` (nothing done) or an action on the
    reported comment or user, with its length and reason."""

    action: str  # one of RESOLUTIONS
    seconds: int | None
    reason: str


def parse_resolution(body: Any, actor: Role) -> Resolution:
    """``{action, seconds?, permanent?, reason?}``.

    Raises:
        BadFrame: (``invalid``) naming the field. Forbidden: a length the actor may not give.
    """
    if not isinstance(body, dict):
        raise BadFrame("body must be a JSON object", code="invalid")
    action = body.get("action")
    if action not in RESOLUTIONS:
        raise BadFrame(f"'action' must be one of {', '.join(RESOLUTIONS)}", code="invalid")
    seconds: int | None = None
    if action in ("mute", "kick", "ban"):
        seconds = duration_s(str(action), actor, body.get("seconds"), body.get("permanent"))
    elif body.get("seconds") is not None or body.get("permanent") is not None:
        raise BadFrame(f"'{action}' takes no 'seconds' or 'permanent'", code="invalid")
    return Resolution(str(action), seconds, check_reason(body.get("reason")))


# --------------------------------------------------------------------------- the audit log
AUDIT_ACTIONS = (*(a for a in ACTIONS if a != "report.resolve"), "report.dismiss")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One moderation action: who (``actor``, ``actor_role``), whom (``target``, ``seq`` of a
    deleted comment), what (``action``; ``until_ms`` of a mute, kick or ban, :data:`FOREVER`
    for good, None for the others), why (``reason``, ``report_id``), when (``ts_ms``) and
    where (``room``; "" on the platform)."""

    id: str
    ts_ms: int
    room: str
    actor: str
    actor_role: Role
    action: str
    target: str = ""
    seq: int | None = None
    until_ms: int | None = None
    reason: str = ""
    report_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id, "ts_ms": self.ts_ms, "room": self.room, "actor": self.actor, "actor_role": self.actor_role,
            "action": self.action, "target": self.target, "seq": self.seq,
            "until_ms": None if self.until_ms is None else wire_until(self.until_ms), "for_good": self.until_ms == FOREVER,
            "reason": self.reason, "report_id": self.report_id, "details": self.details,
        }


@dataclass(frozen=True, slots=True)
class Report:
    """A viewer's report in the moderators' queue: the reported comment (``seq``; 0 for a
    report of the user) and its author (``target``), the reason, the comments around it
    (``context``), and how it was closed (``status``, ``resolution``: ``{action, audit_id,
    reason}``)."""

    id: str
    room: str
    reporter: str
    target: str
    seq: int
    reason: str
    note: str
    context: list[dict[str, Any]]
    status: str  # one of REPORT_STATES
    created_ms: int
    resolved_ms: int | None = None
    resolved_by: str | None = None
    resolution: dict[str, Any] | None = None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id, "room": self.room, "reporter": self.reporter, "target": self.target,
            "seq": self.seq or None, "reason": self.reason, "note": self.note, "context": self.context,
            "status": self.status, "created_ms": self.created_ms, "resolved_ms": self.resolved_ms,
            "resolved_by": self.resolved_by, "resolution": self.resolution,
        }
