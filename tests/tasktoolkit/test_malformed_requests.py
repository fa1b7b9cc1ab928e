"""Inputs that once escaped the 400/401 mapping get the documented JSON answer, never Flask's HTML 500.

Over real HTTP against a worker on a real port: a body nested deeper than the interpreter's recursion
limit, numeric ``X-CloudTasks-*`` headers of thousands of digits, and tokens signed by a trusted key
whose ``iat``/``exp`` are not numbers of seconds.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tasktoolkit.dedup import MemoryDedupStore
from tasktoolkit.headers import ETA, EXECUTION_COUNT, PREVIOUS_RESPONSE, RETRY_COUNT

DEEP = 100_000
HUGE_NUMBER = "9" * 5000


@pytest.fixture
def worker_url(make_worker: Any, serve: Any) -> Iterator[tuple[Any, str]]:
    worker = make_worker(MemoryDedupStore())
    yield worker, serve(worker.app).url + "/tasks/work"


def post(url: str, headers: dict[str, str], body: bytes = b"{}") -> requests.Response:
    return requests.post(url, data=body, headers=headers, timeout=20)


@pytest.mark.parametrize("body", [b"[" * DEEP + b"]" * DEEP, b'{"a":' * DEEP + b"1" + b"}" * DEEP])
def test_a_body_nested_too_deeply_is_400(
    worker_url: tuple[Any, str], tokens: Any, task_headers: Callable[..., dict[str, str]], body: bytes
) -> None:
    worker, url = worker_url
    answer = post(url, task_headers(tokens.google()), body)
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"error": "request body is not valid JSON: nested too deeply"}
    assert worker.count() == 0


@pytest.mark.parametrize("header", [RETRY_COUNT, EXECUTION_COUNT, PREVIOUS_RESPONSE])
@pytest.mark.parametrize("value", [HUGE_NUMBER, "2147483648"])
def test_a_count_header_beyond_int32_is_400_naming_the_header_and_range(
    worker_url: tuple[Any, str],
    tokens: Any,
    task_headers: Callable[..., dict[str, str]],
    header: str,
    value: str,
) -> None:
    worker, url = worker_url
    answer = post(url, task_headers(tokens.google(), **{header: value}))
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]
    assert message.startswith(f"{header} must be an integer in [0, 2147483647], got ")
    assert len(message) < 200  # the value is quoted, cut short
    assert worker.count() == 0


def test_an_eta_of_thousands_of_digits_is_400(
    worker_url: tuple[Any, str], tokens: Any, task_headers: Callable[..., dict[str, str]]
) -> None:
    worker, url = worker_url
    answer = post(url, task_headers(tokens.google(), **{ETA: HUGE_NUMBER}))
    assert answer.status_code == 400 and answer.json()["error"].startswith(f"{ETA} must be seconds")
    assert len(answer.json()["error"]) < 200
    assert worker.count() == 0


@pytest.mark.parametrize(
    "claims",
    [
        {"iat": "1700000000"},
        {"exp": "tomorrow"},
        {"iat": [1]},
        {"exp": {"s": 1}},
        {"iat": True},
        {"exp": 10**400},
        {"exp": float("nan")},  # json writes NaN, and Python's parser reads it back
        {"exp": float("inf")},
    ],
    ids=["iat-str", "exp-str", "iat-list", "exp-dict", "iat-bool", "exp-huge-int", "exp-nan", "exp-inf"],
)
def test_a_signed_token_whose_iat_or_exp_is_not_a_number_is_401(
    worker_url: tuple[Any, str],
    tokens: Any,
    task_headers: Callable[..., dict[str, str]],
    claims: dict[str, Any],
) -> None:
    worker, url = worker_url
    answer = post(url, task_headers(tokens.google(**claims)))
    assert answer.status_code == 401, answer.text
    assert answer.json() == {"error": "iat and exp claims must be numbers of seconds"}
    assert answer.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert worker.count() == 0


def test_a_token_nested_too_deeply_is_401(
    worker_url: tuple[Any, str], tokens: Any, task_headers: Callable[..., dict[str, str]]
) -> None:
    worker, url = worker_url

    def segment(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    header = segment(json.dumps({"alg": "RS256"}).encode())
    token = f"{header}.{segment(b'[' * 20_000 + b']' * 20_000)}.c2ln"
    answer = post(url, task_headers(token))
    assert (answer.status_code, answer.json()) == (401, {"error": "malformed token"})
    assert worker.count() == 0
