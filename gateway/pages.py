"""The demo pages people use: ``/static/*`` (viewer, host console, ops dashboard) and ``/``.

Plain HTML, CSS and ES modules from ``gateway/static/`` (:data:`STATIC_DIR`, served from
the ``gateway.routes`` table) with no build step and no CDN, so they work offline.
``GET /`` redirects to ``/static/index.html``, which says where the tokens come from
(``livecommerce dev`` prints ready-made URLs).

Every response under ``/static/`` carries a strict Content-Security-Policy (scripts and
styles from this origin only, no inline script, WebSockets to this host): the pages render
user text with ``textContent``, and the policy is the second fence if one ever does not.
With a payment provider configured (``LC_PAYMENT_PROVIDER_URL``) its origin is added to
``connect-src``: the viewer page confirms a payment at the provider, as web shops do.
``Cache-Control: no-cache`` lets a redeployed gateway serve new pages at once (the browser
revalidates with the ETag aiohttp computes from the file's mtime and size).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

STATIC_DIR = Path(__file__).with_name("static")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def csp(provider_url: str = "") -> str:
    """The pages' policy; ``provider_url``'s origin may be connected to (the buyer's confirm)."""
    u = urlsplit(provider_url) if provider_url else None
    host = u.netloc.rpartition("@")[2] if u else ""  # an origin has no credentials
    if u is None or u.scheme not in ("http", "https") or not host or any(c in host for c in " ;,'\""):
        return CSP
    return CSP.replace("connect-src 'self' ws: wss:", f"connect-src 'self' ws: wss: {u.scheme}://{host}", 1)


class Pages:
    """``GET /`` and the security headers of every page response (a response hook)."""

    def __init__(self, provider_url: str = "") -> None:
        self.csp = csp(provider_url)

    async def index(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/static/index.html")

    async def security_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.path.startswith("/static/") or request.path == "/api/v1/docs":
            response.headers["Content-Security-Policy"] = self.csp
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Referrer-Policy"] = "no-referrer"  # tokens ride in page URLs
            response.headers.setdefault("Cache-Control", "no-cache")
