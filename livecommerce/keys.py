"""Redis key and channel names, written for Redis Cluster from day one.

The braces are literal hash tags: every key of one room shares ``{room:ID}``, every key of
one sale shares ``{sale:ID}``, so each Lua script touches the keys of one slot only.
A prefix (``LC_KEY_PREFIX``, default ``lc``) lets tests and tenants share one Redis.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "lc"

    # rooms: broadcast, history, presence, counters
    def room(self, room: str, part: str) -> str:
        return f"{self.prefix}:{{room:{room}}}:{part}"

    def room_channel(self, room: str) -> str:
        return self.room(room, "pub")

    def room_hist(self, room: str) -> str:
        return self.room(room, "hist")

    def room_seq(self, room: str) -> str:
        return self.room(room, "seq")

    def room_online(self, room: str) -> str:
        return self.room(room, "online")

    def room_likes(self, room: str) -> str:
        return self.room(room, "likes")

    def room_meta(self, room: str) -> str:
        return self.room(room, "meta")

    # private messages to one gateway node
    def node_inbox(self, node: str) -> str:
        return f"{self.prefix}:{{node:{node}}}:inbox"

    def user_nodes(self, user: str) -> str:
        """Hash node -> connection count of the user's live connections."""
        return f"{self.prefix}:{{user:{user}}}:nodes"

    def user(self, user: str, part: str) -> str:
        return f"{self.prefix}:{{user:{user}}}:{part}"

    # sales
    def sale(self, sale: str, part: str) -> str:
        return f"{self.prefix}:{{sale:{sale}}}:{part}"

    # generic entity namespace (coupon drops, lotteries ...)
    def entity(self, kind: str, ident: str, part: str) -> str:
        return f"{self.prefix}:{{{kind}:{ident}}}:{part}"

    def stream(self, topic: str) -> str:
        """A durable-log stream; one stream per topic partition."""
        return f"{self.prefix}:{{log:{topic}}}"

    def global_key(self, name: str) -> str:
        return f"{self.prefix}:{name}"
