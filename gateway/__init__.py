"""The WebSocket + HTTP edge (aiohttp). Feeds the library's pure core, writes what it returns."""
