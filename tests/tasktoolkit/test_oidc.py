"""OidcVerifier on its own: certificate caching, refetch limits, trust rules, emulator discovery."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from local_runner.config import RunnerSettings
from local_runner.oidc import SigningKey, TokenIssuer
from local_runner.server import RunnerServer
from tasktoolkit import oidc
from tasktoolkit.errors import CallerNotAllowed, CertificateFetchError, TokenVerificationError
from tasktoolkit.oidc import OidcVerifier, max_age_s

CERTS = "/oauth2/v1/certs"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def verifier_factory(tokens: Any, clock: FakeClock) -> Iterator[Any]:
    made: list[OidcVerifier] = []

    def make(**kwargs: Any) -> OidcVerifier:
        options: dict[str, Any] = {
            "audiences": [tokens.audience],
            "allowed_emails": [tokens.email],
            "clock": clock,
        }
        verifier = OidcVerifier(**{**options, **kwargs})
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        verifier.close()


def serve_certs(httpserver: HTTPServer, *keys: SigningKey, cache_control: str = "max-age=600") -> str:
    httpserver.expect_request(CERTS).respond_with_json(
        {key.kid: key.certificate_pem for key in keys}, headers={"Cache-Control": cache_control}
    )
    return httpserver.url_for(CERTS)


def fetches(httpserver: HTTPServer, path: str = CERTS) -> int:
    return sum(1 for request, _ in httpserver.log if request.path == path)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("public, max-age=22105, must-revalidate, no-transform", 22105),
        ("max-age=5", 60),
        ("max-age=999999", 86400),
        (None, 3600),
        ("no-cache", 3600),
    ],
)
def test_max_age(header: str | None, expected: float) -> None:
    assert max_age_s(header) == expected


def test_verifies_and_caches_certificates(
    httpserver: HTTPServer, verifier_factory: Any, tokens: Any, google_key: SigningKey, clock: FakeClock
) -> None:
    verifier = verifier_factory(google_certs_url=serve_certs(httpserver, google_key))
    for _ in range(20):
        caller = verifier.verify(tokens.google())
    assert caller.email == tokens.email and caller.issuer == "https://accounts.google.com"
    assert fetches(httpserver) == 1
    clock.now += 599
    verifier.verify(tokens.google())
    assert fetches(httpserver) == 1
    clock.now += 1
    verifier.verify(tokens.google())
    assert fetches(httpserver) == 2


def test_a_token_seen_again_skips_the_signature_but_not_time_and_audience(
    httpserver: HTTPServer,
    verifier_factory: Any,
    tokens: Any,
    google_key: SigningKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    verifier = verifier_factory(google_certs_url=serve_certs(httpserver, google_key))
    url = "https://worker.example.com/tasks/email"
    token = tokens.google(aud=url)
    assert verifier.verify(token, extra_audiences=[url]).email == tokens.email
    checked = []
    monkeypatch.setattr(oidc, "_decode", lambda *a, **k: checked.append(a))  # the signature check
    assert verifier.verify(token, extra_audiences=[url]).email == tokens.email
    assert checked == []  # answered from the verified tokens
    with pytest.raises(TokenVerificationError, match="wrong audience"):
        verifier.verify(token)  # this request does not accept the URL as audience
    exp = oidc.peek(token)[1]["exp"]
    monkeypatch.setattr(oidc, "_system_time", lambda: exp + verifier.clock_skew_s + 1)
    with pytest.raises(TokenVerificationError, match="token expired"):
        verifier.verify(token, extra_audiences=[url])


def test_a_tampered_copy_of_a_verified_token_is_verified_afresh(
    httpserver: HTTPServer, verifier_factory: Any, tokens: Any, google_key: SigningKey
) -> None:
    verifier = verifier_factory(google_certs_url=serve_certs(httpserver, google_key))
    token = tokens.google()
    verifier.verify(token)
    header, payload, signature = token.split(".")
    forged = ".".join((header, payload, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")))
    with pytest.raises(TokenVerificationError):
        verifier.verify(forged)


def test_unknown_kid_refetches_at_most_once_per_interval(
    httpserver: HTTPServer,
    verifier_factory: Any,
    tokens: Any,
    google_key: SigningKey,
    other_key: SigningKey,
    clock: FakeClock,
) -> None:
    verifier = verifier_factory(google_certs_url=serve_certs(httpserver, google_key))
    verifier.verify(tokens.google())
    foreign = tokens.sign(other_key, tokens.claims())
    for _ in range(5):
        with pytest.raises(TokenVerificationError, match="unknown key id"):
            verifier.verify(foreign)
    assert fetches(httpserver) == 2
    # Google rotated its keys: the new kid is picked up by the (rate-limited) refetch.
    httpserver.clear()
    serve_certs(httpserver, google_key, other_key)
    clock.now += 30
    assert verifier.verify(foreign).email == tokens.email
    assert fetches(httpserver) == 1


def test_certificate_fetch_failure_is_not_a_rejection(
    httpserver: HTTPServer, verifier_factory: Any, tokens: Any
) -> None:
    httpserver.expect_request(CERTS).respond_with_data("oops", status=500)
    verifier = verifier_factory(google_certs_url=httpserver.url_for(CERTS))
    with pytest.raises(CertificateFetchError, match="cannot fetch"):
        verifier.verify(tokens.google())


def test_certificates_without_pem_are_a_fetch_failure(
    httpserver: HTTPServer, verifier_factory: Any, tokens: Any
) -> None:
    httpserver.expect_request(CERTS).respond_with_json({"keys": []})
    verifier = verifier_factory(google_certs_url=httpserver.url_for(CERTS))
    with pytest.raises(CertificateFetchError, match="no PEM certificates"):
        verifier.verify(tokens.google())


def test_unreachable_certificates_are_a_fetch_failure(verifier_factory: Any, tokens: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    verifier = verifier_factory(google_certs_url=f"http://127.0.0.1:{port}/certs")
    with pytest.raises(CertificateFetchError, match="cannot fetch"):
        verifier.verify(tokens.google())


def test_untrusted_issuer_never_triggers_a_fetch(
    httpserver: HTTPServer, verifier_factory: Any, tokens: Any, google_key: SigningKey
) -> None:
    verifier = verifier_factory(google_certs_url=serve_certs(httpserver, google_key))
    with pytest.raises(TokenVerificationError, match="untrusted issuer"):
        verifier.verify(tokens.google(iss="https://evil.example.com"))
    assert fetches(httpserver) == 0


def test_google_issuers_can_be_restricted(
    httpserver: HTTPServer, verifier_factory: Any, tokens: Any, google_key: SigningKey
) -> None:
    verifier = verifier_factory(
        google_certs_url=serve_certs(httpserver, google_key), google_issuers=["https://accounts.google.com"]
    )
    verifier.verify(tokens.google())
    with pytest.raises(TokenVerificationError, match="untrusted issuer"):
        verifier.verify(tokens.google(iss="accounts.google.com"))
    with pytest.raises(ValueError, match="google_issuers"):
        verifier_factory(google_issuers=["https://evil.example.com"])


def test_extra_audiences_apply_per_call(
    httpserver: HTTPServer, verifier_factory: Any, tokens: Any, google_key: SigningKey
) -> None:
    verifier = verifier_factory(google_certs_url=serve_certs(httpserver, google_key), audiences=[])
    token = tokens.google(aud="http://worker/tasks/x?a=1")
    with pytest.raises(TokenVerificationError, match="no audience configured"):
        verifier.verify(token)
    with pytest.raises(TokenVerificationError, match="wrong audience"):
        verifier.verify(token, extra_audiences=["http://worker/tasks/x"])
    verifier.verify(token, extra_audiences=["http://worker/tasks/x?a=1", "http://worker/tasks/x"])


def test_allowlist_is_case_insensitive_and_email_verified_is_required(
    httpserver: HTTPServer, verifier_factory: Any, tokens: Any, google_key: SigningKey
) -> None:
    verifier = verifier_factory(google_certs_url=serve_certs(httpserver, google_key))
    verifier.verify(tokens.google(email=tokens.email.upper()))
    with pytest.raises(CallerNotAllowed, match="not verified"):
        verifier.verify(tokens.google(email_verified=None))
    with pytest.raises(CallerNotAllowed, match="not allowed"):
        verifier.verify(tokens.google(email=None))


def test_trust_issuer_hook_with_fixed_certs(
    verifier_factory: Any, tokens: Any, other_key: SigningKey
) -> None:
    verifier = verifier_factory()
    token = tokens.sign(other_key, tokens.claims(iss="https://fake-queue.test"))
    with pytest.raises(TokenVerificationError, match="untrusted issuer"):
        verifier.verify(token)
    verifier.trust_issuer("https://fake-queue.test", {other_key.kid: other_key.certificate_pem})
    assert verifier.verify(token).issuer == "https://fake-queue.test"
    with pytest.raises(ValueError, match="https URL"):
        verifier.trust_issuer("x", "http://example.com/certs")


def test_settings_are_validated(verifier_factory: Any) -> None:
    with pytest.raises(ValueError, match="clock_skew_s"):
        verifier_factory(clock_skew_s=301)
    with pytest.raises(ValueError, match="google_certs_url"):
        verifier_factory(google_certs_url="http://certs.example.com/")
    with pytest.raises(ValueError, match="host:port"):
        verifier_factory(emulator_host="http://localhost:8123")


@pytest.fixture(scope="module")
def runner() -> Iterator[RunnerServer]:
    with RunnerServer(RunnerSettings(port=0, data_dir=None)) as server:
        yield server


def runner_token(runner: RunnerServer, tokens: Any, now: float) -> str:
    assert runner.issuer is not None
    return runner.issuer.mint(tokens.email, tokens.audience, now)


def test_runner_tokens_need_the_emulator_host(
    verifier_factory: Any, tokens: Any, runner: RunnerServer
) -> None:
    token = runner_token(runner, tokens, time.time())
    with pytest.raises(TokenVerificationError, match="untrusted issuer"):
        verifier_factory().verify(token)
    port = runner.base_url.rsplit(":", 1)[1]
    same_host = verifier_factory(emulator_host=f"127.0.0.1:{port}")
    assert same_host.verify(token).issuer == runner.base_url
    # The env may name the runner differently from the issuer it advertises: discovery bridges the two.
    other_name = verifier_factory(emulator_host=f"localhost:{port}")
    assert other_name.verify(token).issuer == runner.base_url


def test_runner_issuer_is_not_trusted_for_another_emulator_host(
    verifier_factory: Any, tokens: Any, runner: RunnerServer
) -> None:
    impostor = TokenIssuer(SigningKey.generate(), runner.base_url)
    token = impostor.mint(tokens.email, tokens.audience, time.time())
    port = runner.base_url.rsplit(":", 1)[1]
    with pytest.raises(TokenVerificationError, match="unknown key id"):
        verifier_factory(emulator_host=f"127.0.0.1:{port}").verify(token)


def test_token_times_follow_the_token_clock_when_one_is_set(
    httpserver: HTTPServer, verifier_factory: Any, tokens: Any, google_key: SigningKey
) -> None:
    url = serve_certs(httpserver, google_key)
    later = int(time.time()) + 30 * 86400  # a virtual clock a month ahead
    virtual = verifier_factory(google_certs_url=url, token_clock=lambda: later)
    assert virtual.verify(tokens.google(iat=later, exp=later + 3600)).email == tokens.email
    with pytest.raises(TokenVerificationError, match="token expired"):
        virtual.verify(tokens.google())  # valid now, long expired on the token clock
    with pytest.raises(TokenVerificationError, match="not yet valid"):
        virtual.verify(tokens.google(iat=later + 3600, exp=later + 7200))
    real = verifier_factory(google_certs_url=url)
    with pytest.raises(TokenVerificationError):
        real.verify(tokens.google(iat=later, exp=later + 3600))  # the system clock, as google-auth reads it
