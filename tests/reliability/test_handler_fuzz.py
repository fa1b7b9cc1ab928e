"""Fuzzed headers and bodies (hypothesis) against a ``@task_handler`` route on a real port, per dedup store.

Without a valid token the answer is 401 or 403 and the body never runs, whatever the other headers and
the body hold. With a valid token, malformed ``X-CloudTasks-*`` headers and bodies get a 4xx naming the
problem or a normal answer, never a 500 from the toolkit. Among the inputs: JSON bodies and token segments
nested deeper than the interpreter's recursion limit, numeric headers of thousands of digits, and tokens
signed by the trusted key whose ``iat``/``exp`` are not numbers of seconds.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability.figures import Figures, Row

STORES = ["memory", "sqlite", "redis"]
#: Payload keys the test worker acts on (conftest.Worker): left out so that the body never fails on purpose.
ACTIONS = {"action", "block", "delay_s", "status"}
NUMERIC_HEADERS = [
    "X-CloudTasks-TaskRetryCount",
    "X-CloudTasks-TaskExecutionCount",
    "X-CloudTasks-TaskETA",
    "X-CloudTasks-TaskPreviousResponse",
]
HEADERS = [
    "X-CloudTasks-QueueName",
    "X-CloudTasks-TaskName",
    "X-CloudTasks-TaskRetryCount",
    "X-CloudTasks-TaskExecutionCount",
    "X-CloudTasks-TaskETA",
    "X-CloudTasks-TaskPreviousResponse",
    "X-CloudTasks-TaskRetryReason",
    "Content-Type",
]

header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=40
).map(str.strip)
huge_digits = st.integers(min_value=11, max_value=6000).map(lambda n: "9" * n)
header_values = (
    header_text
    | st.sampled_from(["", "0", "-1", "1e309", "99999999999999999999", "2147483648", "nan", "é"])
    | huge_digits
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=8).filter(lambda k: k not in ACTIONS), children, max_size=3)
    ),
    max_leaves=8,
)


def nested(depth: int, kind: str) -> bytes:
    """A JSON document ``depth`` levels deep (past the recursion limit from about 1,000)."""
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def deep_json(max_depth: int) -> st.SearchStrategy[bytes]:
    return st.builds(
        nested, st.integers(min_value=500, max_value=max_depth), st.sampled_from(["array", "object"])
    )


bodies = (
    st.binary(max_size=200) | json_values.map(lambda value: json.dumps(value).encode()) | deep_json(50_000)
)
#: ``iat``/``exp`` values that are not a finite number of seconds.
bad_times = (
    st.text(max_size=12)
    | st.booleans()
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=1)
    | st.integers(min_value=10**309, max_value=10**400)
    | st.sampled_from([float("nan"), float("inf"), float("-inf")])
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@st.composite
def bad_authorizations(draw: st.DrawFn, tokens: Any) -> str | None:
    """No token, noise, a forged or over-nested JWT, a real token with a claim changed after signing, or
    one signed by the trusted key with a non-numeric ``iat``/``exp``."""
    kind = draw(
        st.sampled_from(["none", "noise", "bearer-noise", "forged", "nested", "tampered", "bad-times"])
    )
    if kind == "none":
        return None
    if kind == "noise":
        return draw(header_text)
    if kind == "bearer-noise":
        return "Bearer " + draw(header_text)
    if kind == "forged":
        header = draw(st.dictionaries(st.sampled_from(["alg", "kid", "typ"]), json_values, max_size=3))
        claims = tokens.claims(**draw(st.dictionaries(st.sampled_from(["iss", "aud", "exp"]), json_values)))
        parts = [json.dumps(header).encode(), json.dumps(claims).encode(), draw(st.binary(max_size=64))]
        return "Bearer " + ".".join(b64(part) for part in parts)
    if kind == "nested":
        part = draw(deep_json(3_000))  # two copies in base64 keep the header line under the server's 64 KiB
        header = draw(st.sampled_from([part, json.dumps({"alg": "RS256"}).encode()]))
        return f"Bearer {b64(header)}.{b64(part)}.c2ln"
    if kind == "bad-times":
        claim = draw(st.sampled_from(["iat", "exp"]))
        return "Bearer " + tokens.google(**{claim: draw(bad_times)})
    header, payload, signature = tokens.google().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims[draw(st.sampled_from(["email", "aud", "iss", "exp", "sub"]))] = draw(json_values)
    return f"Bearer {header}.{b64(json.dumps(claims).encode())}.{signature}"


@st.composite
def fuzzed_headers(draw: st.DrawFn) -> dict[str, str]:
    """Task headers with some replaced by noise or left out."""
    changed = draw(st.dictionaries(st.sampled_from(HEADERS), header_values | st.none(), max_size=4))
    return {name: value for name, value in changed.items()}


class Counts:
    def __init__(self) -> None:
        self.tried = 0
        self.server_errors = 0


COUNTS = Counts()


@pytest.fixture(params=STORES)
def route(
    request: pytest.FixtureRequest, make_worker: Any, serve: Any, store_factory: Any
) -> tuple[Any, str]:
    worker = make_worker(store_factory(request.param))
    return worker, serve(worker.app).url + "/tasks/work"


def deliver(
    url: str, task_headers: Callable[..., dict[str, str]], authorization: str | None, fuzz: dict[str, Any]
) -> requests.Response:
    headers = task_headers(None, name=f"t-{time.monotonic_ns()}")
    if authorization is not None:
        headers["Authorization"] = authorization
    for name, value in fuzz["headers"].items():
        headers.pop(name, None)
        if value is not None:
            headers[name] = value
    COUNTS.tried += 1
    answer = requests.post(url, data=fuzz["body"], headers=headers, timeout=20)
    COUNTS.server_errors += answer.status_code >= 500
    return answer


FUZZ = st.fixed_dictionaries({"headers": fuzzed_headers(), "body": bodies})
SETTINGS = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(data=st.data(), fuzz=FUZZ)
def test_no_valid_token_never_runs_the_body(
    route: tuple[Any, str], tokens: Any, task_headers: Any, data: st.DataObject, fuzz: dict[str, Any]
) -> None:
    worker, url = route
    authorization = data.draw(bad_authorizations(tokens))
    answer = deliver(url, task_headers, authorization, fuzz)
    assert answer.status_code in (401, 403), (answer.status_code, answer.text)
    assert "error" in answer.json()
    assert worker.count() == 0


@SETTINGS
@given(fuzz=FUZZ)
def test_valid_token_with_noise_is_never_a_500(
    route: tuple[Any, str], tokens: Any, task_headers: Any, fuzz: dict[str, Any]
) -> None:
    worker, url = route
    before = worker.count()
    answer = deliver(url, task_headers, f"Bearer {tokens.google()}", fuzz)
    assert answer.status_code in (200, 400), (answer.status_code, answer.text)
    if answer.status_code == 400:
        assert worker.count() == before and answer.json()["error"]  # refused before the body, with a reason
    else:  # the body ran once, or a repeated task name was answered from the dedup record
        replayed = answer.headers.get("X-TaskToolkit-Replayed") == "true"
        mismatch = answer.headers.get("Content-Type") == "application/json" and (
            answer.json().get("outcome") == "payload_mismatch"
        )
        assert worker.count() == before + (not (replayed or mismatch)), answer.text


@pytest.mark.parametrize("header", NUMERIC_HEADERS)
def test_thousands_of_digits_in_each_numeric_header_is_400(
    route: tuple[Any, str], tokens: Any, task_headers: Any, header: str
) -> None:
    worker, url = route
    answer = deliver(
        url, task_headers, f"Bearer {tokens.google()}", {"headers": {header: "9" * 5000}, "body": b"{}"}
    )
    assert answer.status_code == 400 and answer.json()["error"].startswith(f"{header} must be")
    assert worker.count() == 0


def test_zz_report_handler_fuzzing_figures(figures: Figures) -> None:
    assert COUNTS.tried > 0
    figures.record(
        Row(
            "handler fuzzing (hypothesis), memory / SQLite / Redis stores",
            f"{COUNTS.tried:,} requests to a @task_handler route",
            "no / noise / forged / over-nested / tampered tokens, signed tokens with non-numeric iat/exp; "
            "noise and thousands of digits in X-CloudTasks-* headers; noise and deeply nested JSON bodies",
            bad_inputs=COUNTS.tried,
            server_errors=COUNTS.server_errors,
        )
    )
