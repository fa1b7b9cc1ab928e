"""OidcVerifier: checks Cloud Tasks' OIDC bearer tokens with google-auth against cached certificates.

Pure library code: no Flask. Certificates are fetched with a ``requests.Session`` the verifier owns and
cached for their ``Cache-Control: max-age``; a verification never fetches unless the cache is cold, expired,
or (at most once per :data:`KID_REFETCH_INTERVAL_S` per URL) the token names an unknown key id.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import cachetools
import google.auth.exceptions
import requests
from google.auth import jwt

from tasktoolkit.config import (
    DEFAULT_CLOCK_SKEW_S,
    EMULATOR_HOST_ENV,
    GOOGLE_CERTS_URL,
    GOOGLE_ISSUERS,
    MAX_CLOCK_SKEW_S,
)
from tasktoolkit.errors import CallerNotAllowed, CertificateFetchError, TokenVerificationError

log = logging.getLogger("tasktoolkit.oidc")

#: The only signature algorithm Google (and the local runner) use for ID tokens.
ALGORITHM = "RS256"
#: Certificate cache lifetime when the response has no ``max-age``, and its bounds.
DEFAULT_CERTS_MAX_AGE_S = 3600.0
MIN_CERTS_MAX_AGE_S = 60.0
MAX_CERTS_MAX_AGE_S = 86400.0
#: An unknown ``kid`` triggers a refetch at most this often per certificate URL.
KID_REFETCH_INTERVAL_S = 30.0
FETCH_TIMEOUT_S = 5.0
#: Verified tokens remembered, so a token seen again skips the signature check (see ``verify``).
VERIFIED_TOKENS_CACHED = 1024
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*(\d+)", re.IGNORECASE)
_HOST_PORT = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: The clock google-auth checks ``iat``/``exp`` against; a reused token is checked against it too.
_system_time = time.time
# google-auth is unannotated; give decode the type it has.
_decode = cast(Callable[..., Mapping[str, Any]], jwt.decode)


@dataclass(frozen=True)
class VerifiedCaller:
    """The verified identity behind a request."""

    email: str
    issuer: str
    claims: Mapping[str, Any]


@dataclass(frozen=True)
class _Verified:
    """A token whose signature verified: its issuer, claims, and until when its signature is trusted."""

    issuer: str
    claims: Mapping[str, Any]
    until: float


@dataclass(frozen=True)
class _Document:
    """A fetched JSON object and when its cache entry expires."""

    data: Mapping[str, Any]
    expires_at: float


def _b64_json(segment: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise TokenVerificationError("malformed token") from exc


def peek(token: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """Returns a token's header and claims WITHOUT verifying anything (to choose the keys to verify with).

    Raises:
        TokenVerificationError: The token is not three base64url JSON segments.
    """
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise TokenVerificationError("malformed token")
    header, claims = _b64_json(parts[0]), _b64_json(parts[1])
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenVerificationError("malformed token")
    return header, claims  # the signature segment is checked by google-auth


def _is_time(value: Any) -> bool:
    """Whether a claim is a usable ``iat``/``exp``: a finite number of seconds (not a bool or a string)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int too large for a float
        return False


def max_age_s(cache_control: str | None) -> float:
    """Seconds a certificate response may be cached, from its ``Cache-Control`` header (bounded)."""
    match = _MAX_AGE.search(cache_control or "")
    if match is None:
        return DEFAULT_CERTS_MAX_AGE_S
    return min(MAX_CERTS_MAX_AGE_S, max(MIN_CERTS_MAX_AGE_S, float(match.group(1))))


def check_certs_url(url: str, what: str) -> str:
    """Returns ``url`` if it is https, or http to a loopback host (local runner, tests).

    Raises:
        ValueError: Any other URL.
    """
    parts = urlsplit(url)
    if (parts.scheme == "https" and parts.hostname) or (
        parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS
    ):
        return url
    raise ValueError(f"{what} must be an https URL (or http on a loopback host), got {url!r}")


def _reason(exc: Exception) -> str:
    """A short, token-free reason for a google-auth rejection."""
    text = str(exc).lower()
    for needle, reason in (
        ("expired", "token expired"),
        ("too early", "token not yet valid"),
        ("audience", "wrong audience"),
        ("signature", "invalid signature"),
        ("key id", "unknown key id"),
        ("iat", "missing iat/exp claim"),
        ("exp", "missing iat/exp claim"),
    ):
        if needle in text:
            return reason
    return "invalid token"


class OidcVerifier:
    """Verifies RS256 OIDC ID tokens from Cloud Tasks (or, when configured, the local runner).

    Trusted issuers and their keys: Google's issuers with ``google_certs_url``; when ``emulator_host`` is set,
    also the local runner at ``http://<emulator_host>`` (and the issuer its discovery document names) with its
    ``/certs``; plus whatever :meth:`trust_issuer` registers. Nothing else.

    Args:
        audiences: Accepted ``aud`` values (a request may add more per call, see :meth:`verify`).
        allowed_emails: Service account emails allowed to call (case-insensitive).
        google_issuers: Accepted Google ``iss`` values.
        google_certs_url: Google's PEM certificate map.
        emulator_host: ``host:port`` of a local runner to trust too (``CLOUD_TASKS_EMULATOR_HOST``).
        clock_skew_s: Tolerance for ``iat``/``exp``.
        clock: Seconds since the epoch; drives the certificate cache and the refetch limiter.
        token_clock: What ``iat``/``exp`` are checked against; ``None`` for the system clock, which
            google-auth reads itself. A test double with a virtual clock sets it (see :attr:`token_clock`).
        session: HTTP session for certificate fetches (the verifier closes it in :meth:`close`).
    """

    def __init__(
        self,
        *,
        audiences: Iterable[str],
        allowed_emails: Iterable[str],
        google_issuers: Iterable[str] = GOOGLE_ISSUERS,
        google_certs_url: str = GOOGLE_CERTS_URL,
        emulator_host: str | None = None,
        clock_skew_s: float = DEFAULT_CLOCK_SKEW_S,
        clock: Callable[[], float] = time.time,
        token_clock: Callable[[], float] | None = None,
        session: requests.Session | None = None,
    ) -> None:
        if not 0 <= clock_skew_s <= MAX_CLOCK_SKEW_S:
            raise ValueError(f"clock_skew_s must be within [0, {MAX_CLOCK_SKEW_S:g}] s, got {clock_skew_s!r}")
        self.audiences = tuple(audiences)
        self.allowed_emails = frozenset(email.lower() for email in allowed_emails)
        self.clock_skew_s = clock_skew_s
        self._clock = clock
        #: Testing hook: the clock tokens' ``iat``/``exp`` are checked against (``None``: the system clock).
        self.token_clock = token_clock
        self._session = session or requests.Session()
        self._sources: dict[str, str | Mapping[str, str]] = {}
        for issuer in google_issuers:
            if issuer not in GOOGLE_ISSUERS:
                raise ValueError(f"google_issuers must be among {list(GOOGLE_ISSUERS)}, got {issuer!r}")
            self._sources[issuer] = check_certs_url(google_certs_url, "google_certs_url")
        self._emulator_base: str | None = None
        if emulator_host is not None:
            if not _HOST_PORT.fullmatch(emulator_host):
                raise ValueError(
                    f"{EMULATOR_HOST_ENV} must be host:port, like localhost:8123, got {emulator_host!r}"
                )
            self._emulator_base = f"http://{emulator_host}"
            self._sources[self._emulator_base] = f"{self._emulator_base}/certs"
        self._cache: cachetools.TLRUCache[str, _Document] = cachetools.TLRUCache(
            maxsize=64, ttu=lambda _url, document, _now: document.expires_at, timer=clock
        )
        self._last_forced: dict[str, float] = {}
        self._lock = threading.Lock()
        #: Tokens whose signature verified, for as long as the certificates that verified them are
        #: cached (their ``iat``/``exp`` are checked again on every use). One token usually comes with
        #: many tasks (the local runner reuses one per account and audience until near its expiry);
        #: keyed by the whole token, signature included, nothing unverified is ever found here.
        self._verified: cachetools.TLRUCache[str, _Verified] = cachetools.TLRUCache(
            maxsize=VERIFIED_TOKENS_CACHED, ttu=lambda _token, entry, _now: entry.until, timer=clock
        )

    # -- trust -----------------------------------------------------------------------------------

    def trust_issuer(self, issuer: str, certs: str | Mapping[str, str]) -> None:
        """Testing hook: also trust ``issuer``, with fixed ``{kid: PEM}`` certs or a certificate URL.

        Meant for test doubles (a fake queue signing with its own test key); production code never
        needs it.
        """
        if isinstance(certs, str):
            check_certs_url(certs, "certs")
        with self._lock:
            self._sources[issuer] = certs if isinstance(certs, str) else dict(certs)

    def _source_for(self, issuer: str) -> str | Mapping[str, str] | None:
        source = self._sources.get(issuer)
        if source is None and self._emulator_base is not None:
            discovered = self._discovered_issuer()
            if discovered == issuer:
                source = f"{self._emulator_base}/certs"
        return source

    def _discovered_issuer(self) -> str:
        assert self._emulator_base is not None
        document = self._fetch(f"{self._emulator_base}/.well-known/openid-configuration")
        issuer = document.data.get("issuer")
        if not isinstance(issuer, str):
            raise CertificateFetchError("the local runner's discovery document has no issuer")
        return issuer

    # -- certificates ----------------------------------------------------------------------------

    def _fetch(self, url: str, *, force: bool = False) -> _Document:
        """Returns the cached JSON object at ``url``, fetching it when absent, expired or forced."""
        with self._lock:
            cached = None if force else self._cache.get(url)
            if cached is not None:
                return cached
            try:
                response = self._session.get(url, timeout=FETCH_TIMEOUT_S)
                response.raise_for_status()
                data = response.json()
            except (requests.RequestException, ValueError) as exc:
                raise CertificateFetchError(f"cannot fetch {url}: {exc}") from exc
            if not isinstance(data, dict):
                raise CertificateFetchError(f"{url} did not return a JSON object")
            document = _Document(data, self._clock() + max_age_s(response.headers.get("Cache-Control")))
            self._cache[url] = document
            log.debug("fetched %s (cached %.0fs)", url, document.expires_at - self._clock())
            return document

    def _certs(self, source: str | Mapping[str, str], kid: str | None) -> tuple[Mapping[str, str], float]:
        """The PEM certificates of ``source`` and until when they are trusted without a new fetch."""
        if not isinstance(source, str):
            return source, self._clock() + DEFAULT_CERTS_MAX_AGE_S
        document = self._fetch(source)
        data = document.data
        if kid is not None and kid not in data:
            now = self._clock()
            with self._lock:
                last = self._last_forced.get(source)
                allowed = last is None or now - last >= KID_REFETCH_INTERVAL_S
                if allowed:
                    self._last_forced[source] = now
            if allowed:
                document = self._fetch(source, force=True)
                data = document.data
        certs = {k: v for k, v in data.items() if isinstance(v, str) and "-----BEGIN" in v}
        if not certs:
            raise CertificateFetchError(f"{source} returned no PEM certificates")
        return certs, document.expires_at

    # -- verification ----------------------------------------------------------------------------

    def verify(self, token: str, *, extra_audiences: Collection[str] = ()) -> VerifiedCaller:
        """Verifies a bearer token and returns the caller.

        Args:
            token: The JWT from ``Authorization: Bearer``.
            extra_audiences: Audiences accepted for this request only (e.g. the request URL).

        Raises:
            TokenVerificationError: Malformed, not RS256, untrusted issuer, unknown key, bad signature,
                expired or not yet valid, or wrong audience (401).
            CallerNotAllowed: The service account is not allowed or its email is not verified (403).
            CertificateFetchError: The issuer's certificates cannot be fetched (503).
        """
        audiences = [*self.audiences, *extra_audiences]
        if not audiences:
            raise TokenVerificationError("no audience configured")
        with self._lock:
            try:  # one lookup; ``get`` checks the entry's expiry twice
                verified: _Verified | None = self._verified[token]
            except KeyError:  # absent, or its certificates' time is over
                verified = None
        if verified is None:
            verified = self._verify_signed(token, audiences)
        else:
            self._check_reused(verified.claims, audiences)
        claims = verified.claims
        email = claims.get("email")
        if not isinstance(email, str) or email.lower() not in self.allowed_emails:
            raise CallerNotAllowed("service account not allowed")
        if claims.get("email_verified") not in (True, "true"):
            raise CallerNotAllowed("service account email not verified")
        return VerifiedCaller(email=email, issuer=verified.issuer, claims=dict(claims))

    def _verify_signed(self, token: str, audiences: list[str]) -> _Verified:
        """Full verification with google-auth: issuer, key, signature, ``iat``/``exp`` and audience."""
        header, unverified = peek(token)
        if header.get("alg") != ALGORITHM:
            raise TokenVerificationError(f"unsupported token algorithm (only {ALGORITHM} is accepted)")
        issuer = unverified.get("iss")
        kid = header.get("kid")
        if not isinstance(issuer, str) or (kid is not None and not isinstance(kid, str)):
            raise TokenVerificationError("malformed token")
        # google-auth does arithmetic on iat/exp before it looks at their type (a TypeError for "1700000000").
        if any(claim in unverified and not _is_time(unverified[claim]) for claim in ("iat", "exp")):
            raise TokenVerificationError("iat and exp claims must be numbers of seconds")
        source = self._source_for(issuer)
        if source is None:
            raise TokenVerificationError("untrusted issuer")
        certs, certs_until = self._certs(source, kid)
        if kid is not None and kid not in certs:
            raise TokenVerificationError("unknown key id")
        try:
            claims = _decode(
                token, certs=certs, audience=audiences, clock_skew_in_seconds=self._skew_for_google()
            )
            if self.token_clock is not None:
                self._check_times(claims)
        except (ValueError, TypeError, OverflowError, google.auth.exceptions.GoogleAuthError) as exc:
            log.debug("token rejected: %s", exc)
            raise TokenVerificationError(_reason(exc)) from exc
        if claims.get("iss") != issuer:  # pragma: no cover - same payload google-auth just verified
            raise TokenVerificationError("untrusted issuer")
        verified = _Verified(issuer, claims, certs_until)
        with self._lock:
            self._verified[token] = verified
        return verified

    def _skew_for_google(self) -> float:
        """The tolerance google-auth gets: ours, widened by how far :attr:`token_clock` is from the system's.

        google-auth checks ``iat``/``exp`` against the system clock; with a ``token_clock`` that check is only
        a coarse one and :meth:`_check_times` then applies the exact rule against ``token_clock``.
        """
        if self.token_clock is None:
            return self.clock_skew_s
        return self.clock_skew_s + math.ceil(abs(self.token_clock() - _system_time()))

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        """google-auth's ``iat``/``exp`` rule, against :attr:`token_clock` (or the system clock)."""
        now = (self.token_clock or _system_time)()
        if now < float(claims["iat"]) - self.clock_skew_s:
            raise TokenVerificationError("token not yet valid")
        if now > float(claims["exp"]) + self.clock_skew_s:
            raise TokenVerificationError("token expired")

    def _check_reused(self, claims: Mapping[str, Any], audiences: list[str]) -> None:
        """What may differ for a token verified before: the time, and the audiences this request accepts."""
        self._check_times(claims)
        if claims.get("aud") not in audiences:  # google-auth's own rule on the first use
            raise TokenVerificationError("wrong audience")

    def close(self) -> None:
        """Closes the HTTP session."""
        self._session.close()
