"""Security battery: forged and misdirected tokens against a real Flask app on a real port."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from local_runner.config import RunnerSettings
from local_runner.oidc import SigningKey
from local_runner.server import RunnerServer

PATH = "/tasks/work"
PAYLOAD = {"action": "ok"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(signature)}"


def hs256_with_public_key(key: SigningKey, claims: dict[str, Any]) -> str:
    """The classic algorithm-confusion forgery: HMAC keyed with the (public) certificate."""
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(key.certificate_pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def tampered(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"


@pytest.fixture(params=["memory", "sqlite", "redis"])
def post(
    request: pytest.FixtureRequest,
    make_worker: Any,
    serve: Any,
    task_headers: Callable[..., dict[str, str]],
    store_factory: Any,
) -> Any:
    """Posts to a worker on a real port, once per dedup store: no store may weaken the checks."""
    worker = make_worker(store_factory(request.param))
    server = serve(worker.app)

    def send(token: str | None, **extra: str) -> requests.Response:
        return requests.post(
            server.url + PATH, json=PAYLOAD, headers=task_headers(token, **extra), timeout=10
        )

    send.worker = worker  # type: ignore[attr-defined]
    return send


def forged_tokens(tokens: Any, google_key: SigningKey, other_key: SigningKey) -> dict[str, tuple[str, str]]:
    now = int(time.time())
    good = tokens.google()
    return {
        "garbage": ("not-a-jwt", "malformed token"),
        "alg none": (unsigned({"alg": "none", "typ": "JWT"}, tokens.claims()), "unsupported token algorithm"),
        "alg none with kid": (
            unsigned({"alg": "none", "kid": google_key.kid}, tokens.claims(), b"x"),
            "unsupported token algorithm",
        ),
        "HS256 keyed with the public key": (
            hs256_with_public_key(google_key, tokens.claims()),
            "unsupported token algorithm",
        ),
        "expired": (tokens.google(iat=now - 7200, exp=now - 3600), "token expired"),
        "not yet valid": (tokens.google(iat=now + 3600, exp=now + 7200), "token not yet valid"),
        "wrong audience": (tokens.google(aud="https://other-service.a.run.app"), "wrong audience"),
        "wrong issuer": (tokens.google(iss="https://evil.example.com"), "untrusted issuer"),
        "look-alike issuer": (tokens.google(iss="https://accounts.google.com.evil.com"), "untrusted issuer"),
        "unknown kid": (tokens.sign(other_key, tokens.claims()), "unknown key id"),
        "another key under Google's kid": (
            tampered_kid(tokens.sign(other_key, tokens.claims()), google_key.kid),
            "invalid signature",
        ),
        "tampered payload": (
            tampered(good, email="attacker@evil.iam.gserviceaccount.com"),
            "invalid signature",
        ),
        "missing exp": (tokens.google(exp=None), "missing iat/exp claim"),
    }


def tampered_kid(token: str, kid: str) -> str:
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    data["kid"] = kid
    return f"{b64(json.dumps(data).encode())}.{payload}.{signature}"


FORGERIES = [
    "garbage",
    "alg none",
    "alg none with kid",
    "HS256 keyed with the public key",
    "expired",
    "not yet valid",
    "wrong audience",
    "wrong issuer",
    "look-alike issuer",
    "unknown kid",
    "another key under Google's kid",
    "tampered payload",
    "missing exp",
]


@pytest.mark.parametrize("case", FORGERIES)
def test_forged_or_misdirected_token_is_401(
    case: str, post: Any, tokens: Any, google_key: SigningKey, other_key: SigningKey
) -> None:
    token, reason = forged_tokens(tokens, google_key, other_key)[case]
    response = post(token)
    assert response.status_code == 401
    assert response.json()["error"].startswith(reason)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert post.worker.count() == 0


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"email": "someone-else@my-proj.iam.gserviceaccount.com"}, "service account not allowed"),
        ({"email": None}, "service account not allowed"),
        ({"email_verified": False}, "service account email not verified"),
        ({"email_verified": None}, "service account email not verified"),
    ],
)
def test_valid_token_of_a_caller_not_allowed_is_403(
    claims: dict[str, Any], reason: str, post: Any, tokens: Any
) -> None:
    response = post(tokens.google(**claims))
    assert response.status_code == 403
    assert response.json() == {"error": reason}
    assert post.worker.count() == 0


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer   ", "Basic dGFza3M6cHc="])
def test_spoofed_cloud_tasks_headers_without_a_token_are_401(authorization: str | None, post: Any) -> None:
    extra = {} if authorization is None else {"Authorization": authorization}
    response = post(None, **extra)
    assert response.status_code == 401
    assert response.json() == {"error": "missing bearer token"}
    assert post.worker.count() == 0


def test_valid_google_token_runs_the_handler(post: Any, tokens: Any) -> None:
    response = post(tokens.google())
    assert response.status_code == 200
    assert response.json() == {"ran": "work", "queue": "emails", "task": "task-1", "retry_count": 0}
    assert post.worker.count() == 1


def test_both_google_issuer_spellings_pass(post: Any, tokens: Any) -> None:
    assert (
        post(tokens.google(iss="accounts.google.com"), **{"X-CloudTasks-TaskName": "t-a"}).status_code == 200
    )
    assert post.worker.count() == 1


def test_small_clock_skew_is_tolerated(post: Any, tokens: Any) -> None:
    now = int(time.time())
    assert post(tokens.google(iat=now + 5, exp=now + 3600)).status_code == 200


def test_valid_token_without_task_headers_is_400(
    make_worker: Any, serve: Any, tokens: Any, store_factory: Any
) -> None:
    server = serve(make_worker(store_factory("memory")).app)
    response = requests.post(
        server.url + PATH, json=PAYLOAD, headers={"Authorization": f"Bearer {tokens.google()}"}, timeout=10
    )
    assert response.status_code == 400
    assert response.json() == {"error": "missing X-CloudTasks-QueueName header: not a Cloud Tasks request"}


def test_audience_from_request_accepts_the_url_with_and_without_query(
    make_worker: Any, serve: Any, tokens: Any, task_headers: Any, store_factory: Any
) -> None:
    worker = make_worker(
        store_factory("memory"), TASKTOOLKIT_AUDIENCE=None, TASKTOOLKIT_AUDIENCE_FROM_REQUEST=True
    )
    server = serve(worker.app)
    url = f"{server.url}{PATH}?tenant=7"
    for index, audience in enumerate([url, f"{server.url}{PATH}"]):
        headers = task_headers(tokens.google(aud=audience), name=f"t{index}")
        assert requests.post(url, json=PAYLOAD, headers=headers, timeout=10).status_code == 200
    headers = task_headers(tokens.google(aud=f"{server.url}/tasks/other"), name="t3")
    assert requests.post(url, json=PAYLOAD, headers=headers, timeout=10).status_code == 401
    assert worker.count() == 2


def test_certificate_fetch_failure_answers_503(
    make_worker: Any, serve: Any, tokens: Any, task_headers: Any, store_factory: Any, httpserver: Any
) -> None:
    httpserver.expect_request("/down").respond_with_data("unavailable", status=503)
    worker = make_worker(store_factory("memory"), TASKTOOLKIT_GOOGLE_CERTS_URL=httpserver.url_for("/down"))
    server = serve(worker.app)
    response = requests.post(
        server.url + PATH, json=PAYLOAD, headers=task_headers(tokens.google()), timeout=10
    )
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert worker.count() == 0


@pytest.fixture(scope="module")
def runner() -> Any:
    with RunnerServer(RunnerSettings(port=0, data_dir=None)) as server:
        yield server


def test_runner_tokens_pass_only_with_the_emulator_host(
    runner: RunnerServer,
    make_worker: Any,
    serve: Any,
    tokens: Any,
    task_headers: Any,
    store_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert runner.issuer is not None
    token = runner.issuer.mint(tokens.email, tokens.audience, time.time())
    production = serve(make_worker(store_factory("memory")).app)
    response = requests.post(production.url + PATH, json=PAYLOAD, headers=task_headers(token), timeout=10)
    assert response.status_code == 401 and response.json() == {"error": "untrusted issuer"}

    monkeypatch.setenv("CLOUD_TASKS_EMULATOR_HOST", f"localhost:{runner.base_url.rsplit(':', 1)[1]}")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tasktoolkit"):
        worker = make_worker(store_factory("memory"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "CLOUD_TASKS_EMULATOR_HOST" in warnings[0] and "production" in warnings[0]
    local = serve(worker.app)
    response = requests.post(local.url + PATH, json=PAYLOAD, headers=task_headers(token), timeout=10)
    assert response.status_code == 200
    # Emulator trust adds the runner; it removes nothing else.
    other = runner.issuer.mint("intruder@my-proj.iam.gserviceaccount.com", tokens.audience, time.time())
    response = requests.post(
        local.url + PATH, json=PAYLOAD, headers=task_headers(other, name="t2"), timeout=10
    )
    assert response.status_code == 403
    response = requests.post(
        local.url + PATH, json=PAYLOAD, headers=task_headers(tokens.google(), name="t3"), timeout=10
    )
    assert response.status_code == 200
    assert worker.count() == 2
