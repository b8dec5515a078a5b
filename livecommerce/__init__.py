"""livecommerce: a real-time backend for live-stream commerce.

The library holds the pure protocol and domain core plus the storage adapters; the
``gateway`` and ``workers`` packages import it, never the other way round.
"""

__version__ = "0.1.0"
