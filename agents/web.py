"""The worker's HTTP server: only the project's views, behind a bearer token.

Faust serves views of its own next to ours: ``/router/`` (the cluster's
partition map), ``/table/{name}/{key}/`` (any table's raw value, e.g. an
order's internal document) and, depending on its settings, an index at ``/``
and statistics. :func:`secure` removes them before the web server starts, so
the worker answers only the pages the project installs with ``app.page``
(agents.topology, agents.ingest).

Every page but the probes and the metrics (:data:`OPEN_PATHS`) needs
``Authorization: Bearer <SHOPWATCH_WEB_TOKEN>`` when a token is set; without
one a request gets ``401 {"error": "unauthorized"}`` with
``WWW-Authenticate: Bearer``. A token is mandatory when the worker listens
beyond loopback (``SHOPWATCH_WEB_BIND`` other than 127.0.0.0/8, ::1 or
localhost): without one :func:`secure` refuses, before anything connects to
Kafka.

Requests for a key another worker owns are proxied to it by
``app.router.route_req`` (faust.app.router), which forwards the request's
headers, ``Authorization`` included: the owner checks the same token, so every
worker of one app id needs the same ``SHOPWATCH_WEB_TOKEN``.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web as aioweb
from faust.web.base import BlueprintManager

from shopwatch.agents.settings import Settings

log = logging.getLogger(__name__)

TOKEN_ENV = "SHOPWATCH_WEB_TOKEN"
BIND_ENV = "SHOPWATCH_WEB_BIND"
#: Pages served without a token: probes (kubelet, Docker HEALTHCHECK) and Prometheus.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: Placeholder tokens of deploy/ (compose.yaml, k8s/shopwatch.yaml) start with this.
PLACEHOLDER_PREFIX = "change-me"
MIN_TOKEN_LENGTH = 16


class InsecureBind(SystemExit):
    """The HTTP server would listen beyond loopback without a token.

    A SystemExit: uncaught, Python prints the message (one line) on stderr and
    exits with status 1."""


def is_loopback(bind: str) -> bool:
    """True when ``bind`` (a host or IP address) only listens on loopback:
    127.0.0.0/8, ::1 (also as ``[::1]`` or IPv4-mapped) or ``localhost``.
    Anything else, including an empty bind (all interfaces) or a host name,
    is not."""
    host = bind.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def check_bind(s: Settings) -> None:
    """Raise :class:`InsecureBind` when ``s`` binds beyond loopback without a token."""
    if not s.web_token.strip() and not is_loopback(s.web_bind):
        raise InsecureBind(
            f"shopwatch worker: refusing to serve HTTP on {s.web_bind!r} (not loopback) without a token: "
            f"set {TOKEN_ENV} (e.g. `openssl rand -hex 32`) or bind 127.0.0.1 ({BIND_ENV})"
        )


def bearer_ok(header: str | None, token: str) -> bool:
    """``header`` (an Authorization header) is ``Bearer <token>``, compared in constant time."""
    if not header:
        return False
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def unauthorized() -> aioweb.Response:
    return aioweb.json_response(
        {"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer", "Cache-Control": "no-store"}
    )


Handler = Callable[[aioweb.Request], Awaitable[aioweb.StreamResponse]]


def token_middleware(token: str):
    """aiohttp middleware: every matched route outside OPEN_PATHS needs ``Bearer token``.

    Unmatched requests go on to aiohttp's own 404/405, so a path the worker
    does not serve reads as 404 with or without a token."""

    @aioweb.middleware
    async def require_token(request: aioweb.Request, handler: Handler) -> aioweb.StreamResponse:
        match = request.match_info
        if match.http_exception is not None:  # 404 / 405: nothing of ours answers
            return await handler(request)
        resource = match.route.resource
        if resource is not None and resource.canonical in OPEN_PATHS:
            return await handler(request)
        if not bearer_ok(request.headers.get("Authorization"), token):
            return unauthorized()
        return await handler(request)

    return require_token


def secure(app, s: Settings) -> None:
    """Make ``app``'s web server serve only the project's views, behind ``s.web_token``.

    Call after the views are installed and before the worker starts (the web
    server applies its blueprints and freezes its middlewares when it starts).
    Raises :class:`InsecureBind` (exit status 1, one line on stderr) when the
    bind is not loopback and no token is set.
    """
    check_bind(s)
    web = app.web
    web_app = getattr(web, "web_app", None)
    if not isinstance(web_app, aioweb.Application):
        raise TypeError(f"shopwatch needs Faust's aiohttp web driver, not {type(web).__name__}")
    if getattr(web, "_shopwatch_secured", False):
        return
    if web.blueprints.applied:
        raise RuntimeError("secure() must run before the web server starts")
    # Faust's built-in blueprints (/router, /table, the index or stats at /,
    # /graph, /performance) are applied when the server starts: none of them.
    web.blueprints = BlueprintManager()
    token = s.web_token.strip()
    if token:
        web_app.middlewares.append(token_middleware(token))
        if token.startswith(PLACEHOLDER_PREFIX) or len(token) < MIN_TOKEN_LENGTH:
            log.warning("%s is a placeholder or shorter than %d characters: set a random one",
                        TOKEN_ENV, MIN_TOKEN_LENGTH)
    else:
        log.info("HTTP on %s without a token (loopback only)", s.web_bind)
    web._shopwatch_secured = True
