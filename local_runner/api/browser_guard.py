"""Keeps web browsers from driving the runner on behalf of the pages a developer visits.

A runner on 127.0.0.1 is reachable from every page open in the developer's browser. Without these
checks a page could submit a form to ``/runner/v1/reset`` or create tasks (which the runner then sends,
with OIDC tokens that local handlers trust), and a page whose own name is rebound to 127.0.0.1 (DNS
rebinding) could read every task. The official clients and gcloud are not browsers: they send JSON with
``Content-Type: application/json`` (or no body at all) and no ``Origin``, so nothing here refuses them.

Rules, checked before any handler runs (a *write* is any method but GET, HEAD and OPTIONS):

1. **Host.** The ``Host`` header must name this runner, with any port, so that no web page can reach it by
   DNS rebinding (a page whose own name is rebound to the runner's address sends that name). Bound to a
   loopback address, the runner answers loopback names: ``localhost``, a name under ``.localhost``
   (browsers resolve those to loopback themselves), an address in 127.0.0.0/8 or ``[::1]``. Bound to
   another address (``--host 0.0.0.0`` in Docker Compose, where handlers use a service name) with
   ``--allowed-host NAME``, it answers those names, loopback names and IP addresses (a rebound page never
   sends an address). Either way the names given with ``--allowed-host`` are answered too. Anything else
   is ``403 PERMISSION_DENIED``. The OIDC issuer's public documents (``GET /certs``, ``/jwks``,
   ``/.well-known/...``) are readable under any name, and so is a request without ``Host`` (HTTP/1.0;
   browsers always send one). Bound to another address without ``--allowed-host``, the runner answers
   every name (and logs a warning at start-up). gRPC is not checked: it arrives only as HTTP/2 with prior
   knowledge (see :mod:`local_runner.api.protocol_sniffer`), which no browser sends.
2. **Cross-site writes.** A write whose ``Sec-Fetch-Site`` is neither ``same-origin`` nor ``none``, or
   whose ``Origin`` is not the runner's own (``null`` included), is ``403 PERMISSION_DENIED``.
3. **JSON only.** Unless it comes from the runner's own origin (rule 2 checked its ``Origin`` or
   ``Sec-Fetch-Site: same-origin``), a write with a body must say ``Content-Type: application/json``,
   and the types a page may send without a CORS preflight (``text/plain``,
   ``application/x-www-form-urlencoded``, ``multipart/form-data``) are refused even with an empty body:
   ``400 INVALID_ARGUMENT``. This covers browsers that send no ``Origin``. A write with no body and no
   ``Content-Type`` (``POST ...:pause`` from a plain HTTP client) passes.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping

from aiohttp import web
from aiohttp.typedefs import Middleware

from local_runner import oidc
from local_runner.api.errors import api_error_response
from local_runner.config import ConfigError
from local_runner.errors import ApiError, Code, InvalidArgument

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Methods that change nothing: a cross-site page gains nothing by sending them (it cannot read the answer).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: ``Sec-Fetch-Site`` values of a request the runner's own pages, or the user, started.
_SAME_ORIGIN_FETCH_SITES = frozenset({"same-origin", "none"})
#: Content types a browser sends cross-site without a CORS preflight (the Fetch standard's list).
SIMPLE_CONTENT_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
JSON_CONTENT_TYPE = "application/json"
#: Paths of the OIDC issuer's public documents, readable whatever the ``Host``.
_PUBLIC_PATHS = frozenset({oidc.CERTS_PATH, oidc.JWKS_PATH, oidc.DISCOVERY_PATH})


def is_loopback_host(name: str) -> bool:
    """Whether a host name or address (no port, IPv6 without brackets) can only mean this machine."""
    name = name.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _host_name(host_header: str) -> str:
    """The name of a ``Host`` header: port and IPv6 brackets removed, lower case, no trailing dot."""
    if host_header.startswith("["):
        name = host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    else:
        name, colon, port = host_header.rpartition(":")
        name = name if colon and port.isdigit() else host_header
    return name.rstrip(".").lower()


#: A DNS name as ``--allowed-host`` takes it: dot-separated labels (``_`` allowed, as in Compose names).
_DNS_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*")


def allowed_host_name(text: str) -> str:
    """A ``--allowed-host`` value as the check compares it (lower case; IPv6 without brackets).

    Raises:
        ConfigError: ``text`` is not a host name or IP address (a port, a scheme or a path included).
    """
    name = text.strip().rstrip(".").lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if _is_ip_address(name) or (len(name) <= 253 and _DNS_NAME.fullmatch(name)):
        return name
    raise ConfigError(
        f'--allowed-host "{text}" is not a host name or IP address: give the name clients use to reach '
        "the runner, without scheme or port (e.g. runner)"
    )


class HostCheck:
    """Which ``Host`` names the runner answers (rule 1 of the module), decided once per distinct header."""

    def __init__(self, bind_host: str, allowed: Iterable[str] = ()) -> None:
        self.loopback_bind = is_loopback_host(bind_host.strip("[]"))
        #: The names given with ``--allowed-host``, as :func:`allowed_host_name` returns them.
        self.allowed = frozenset(allowed_host_name(name) for name in allowed)
        #: Whether any name is refused (not for another bind address without ``--allowed-host``).
        self.enforced = self.loopback_bind or bool(self.allowed)
        self.accepts: Callable[[str], bool] = functools.lru_cache(maxsize=256)(self._accepts)

    def _accepts(self, host_header: str) -> bool:
        """Whether the runner answers a request carrying this ``Host`` header (a client uses few)."""
        name = _host_name(host_header)
        if is_loopback_host(name) or name in self.allowed:
            return True
        return not self.loopback_bind and _is_ip_address(name)

    def refused(self, host: str) -> ApiError:
        """The ``403 PERMISSION_DENIED`` for a request to ``host``, naming the names that are answered."""
        extra = (
            f" or a name given with --allowed-host ({', '.join(sorted(self.allowed))})"
            if self.allowed
            else ""
        )
        if self.loopback_bind:
            answered = f"localhost, *.localhost, 127.0.0.0/8 or [::1]{extra} (any port)"
            hint = "call it by one of those names, add the name with --allowed-host, or bind --host 0.0.0.0"
        else:
            answered = f"localhost, *.localhost, an IP address{extra} (any port)"
            hint = "call it by one of those names, or add the name with --allowed-host"
        return ApiError(
            f'Host "{host}" is not a name this runner answers. It answers only requests for {answered}, '
            f"so that no web page can reach it by DNS rebinding: {hint}.",
            Code.PERMISSION_DENIED,
        )


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def _origin_authority(origin: str) -> str:
    """``host[:port]`` of an ``Origin`` header (``""`` for ``null`` or anything malformed)."""
    scheme, sep, authority = origin.partition("://")
    return authority.lower() if sep and scheme and authority and "/" not in authority else ""


def refusal(
    method: str, path: str, headers: Mapping[str, str], has_body: bool, hosts: HostCheck
) -> ApiError | None:
    """Why the request must be refused under the module's rules, or ``None`` to let it through."""
    write = method.upper() not in SAFE_METHODS
    return _refusal(
        hosts,
        write,
        not write and path in _PUBLIC_PATHS,
        headers.get("Host", ""),
        headers.get("Sec-Fetch-Site", ""),
        headers.get("Origin"),
        headers.get("Content-Type"),
        has_body,
    )


@functools.lru_cache(maxsize=512)  # a client sends the same few header values on every call
def _refusal(
    hosts: HostCheck,
    write: bool,
    public_read: bool,
    host: str,
    fetch_site_header: str,
    origin: str | None,
    content_type: str | None,
    has_body: bool,
) -> ApiError | None:
    """:func:`refusal` from the values it depends on (the answer is the same for the same values)."""
    if hosts.enforced and host and not public_read and not hosts.accepts(host):
        return hosts.refused(host)
    if not write:
        return None
    fetch_site = fetch_site_header.strip().lower()
    if fetch_site and fetch_site not in _SAME_ORIGIN_FETCH_SITES:
        return _cross_site(f'Sec-Fetch-Site is "{fetch_site}"')
    if origin is not None and _origin_authority(origin.strip()) != host.lower():
        return _cross_site(f'Origin "{origin}" is not this runner\'s origin')
    if origin is not None or fetch_site == "same-origin":
        return None  # a page of the runner's own (a form may post form data)
    media_type = _media_type(content_type or "")
    if media_type in SIMPLE_CONTENT_TYPES or (has_body and media_type != JSON_CONTENT_TYPE):
        shown = f'"{content_type}"' if content_type is not None else "missing"
        return InvalidArgument(
            f"Content-Type is {shown}: a request body must be JSON, "
            f"sent with Content-Type: {JSON_CONTENT_TYPE}."
        )
    return None


def _cross_site(reason: str) -> ApiError:
    return ApiError(
        f"Cross-site request refused: {reason}. The runner accepts changes only from API clients and from "
        "its own origin, so that web pages cannot create tasks or reset it.",
        Code.PERMISSION_DENIED,
    )


def middleware(hosts: HostCheck) -> Middleware:
    """The aiohttp middleware applying :func:`refusal`, with the ``Host`` names ``hosts`` answers."""

    @web.middleware
    async def browser_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        has_body = request.body_exists and request.content_length != 0
        error = refusal(request.method, request.path, request.headers, has_body, hosts)
        if error is not None:
            return api_error_response(error)
        return await handler(request)

    return browser_guard
