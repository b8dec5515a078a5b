"""The wire protocol: envelopes, commands and the codec. Pure: no I/O, no asyncio."""

from .codec import Format, decode_frame, encode, encode_batch
from .commands import COMMANDS, Command, parse_command
from .events import COUNTER_TYPES, CRITICAL_TYPES, Priority, envelope, priority_of

__all__ = [
    "COMMANDS",
    "COUNTER_TYPES",
    "CRITICAL_TYPES",
    "Command",
    "Format",
    "Priority",
    "decode_frame",
    "encode",
    "encode_batch",
    "envelope",
    "parse_command",
    "priority_of",
]
