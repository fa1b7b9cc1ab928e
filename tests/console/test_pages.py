"""The console's pages over real HTTP against an in-process runner: content, escaping and refusals."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import requests
from pytest_httpserver import HTTPServer
from testsupport.runner_process import RunnerProcess
from werkzeug import Response

from local_runner.clock import VirtualClock
from local_runner.console.payload import MAX_SHOWN_BYTES
from local_runner.console.security import CONTENT_SECURITY_POLICY
from local_runner.model import (
    HttpMethod,
    HttpRequest,
    HttpTarget,
    NewTask,
    OidcToken,
    Queue,
    QueueState,
    RetryConfig,
    TaskState,
    UriOverride,
)
from local_runner.server import RunnerServer

from .conftest import PARENT, QUEUE, Page, start_runner

NOWHERE = "http://127.0.0.1:9/work"
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def new_task(runner: RunnerServer, task_id: str, body: bytes = b"{}", later: float = 3600, **fields: object):
    request = HttpRequest(url=NOWHERE, body=body, **fields)  # type: ignore[arg-type]
    name = f"{QUEUE}/tasks/{task_id}"
    return runner.service.create_task(
        QUEUE, NewTask(request, name=name, schedule_time=runner.clock.now() + later)
    )


def wait_idle(runner: RunnerServer) -> None:
    answer = requests.post(f"{runner.base_url}/runner/v1/waitIdle", json={"timeout": "10s"}, timeout=15)
    assert answer.status_code == 200, answer.text


def test_queues_page_shows_state_limits_stats_and_strict_headers(runner: RunnerServer, page: Page) -> None:
    runner.service.create_queue(PARENT, Queue(QUEUE, retry_config=RetryConfig(max_attempts=7)))
    runner.service.pause_queue(QUEUE)
    new_task(runner, "later")
    new_task(runner, "due", later=0)
    answer = page.get("/")
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert (
        "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
        and "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    )
    assert answer.headers["X-Frame-Options"] == "DENY"
    html = answer.text
    assert f'href="/console/{QUEUE}"' in html
    assert 'data-state="PAUSED"' in html and "7 attempts" in html and "500/s, burst 100" in html
    assert re.search(r'data-stat="due">1<', html) and re.search(r'data-stat="later">1<', html)
    assert '<svg class="chart"' in html and "<script>" not in html.replace("<script src", "")
    assert f'action="/console/{QUEUE}:resume"' in html  # a paused queue offers Resume


def test_live_fragment_is_the_live_part_only(runner: RunnerServer, page: Page) -> None:
    runner.service.create_queue(PARENT, Queue(QUEUE))
    fragment = page.get("/", **{"X-Console-Fragment": "1"})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert "data-updated=" in fragment.text and f'data-queue="{QUEUE}"' in fragment.text


def test_queue_page_pages_and_filters_tasks(runner: RunnerServer, page: Page, clock: VirtualClock) -> None:
    runner.service.create_queue(PARENT, Queue(QUEUE))
    runner.service.pause_queue(QUEUE)
    for index in range(55):
        new_task(runner, f"t{index:03d}", later=index)
    first = page.get(f"/console/{QUEUE}").text
    assert first.count('class="task-link"') == 50 and ">t000<" in first and ">t050<" not in first
    next_link = re.search(r'class="next-page" href="([^"]+)"', first)
    assert next_link is not None
    second = page.get(next_link.group(1).replace("&amp;", "&")).text
    assert second.count('class="task-link"') == 5 and ">t054<" in second and "First page" in second
    queued = page.get(f"/console/{QUEUE}?state=queued").text
    assert queued.count('class="task-link"') == 50 and ">t000<" in queued  # earliest schedule time first
    next_queued = re.search(r'class="next-page" href="([^"]+)"', queued)
    assert next_queued is not None
    assert page.get(next_queued.group(1).replace("&amp;", "&")).text.count('class="task-link"') == 5
    assert "No tasks in this state" in page.get(f"/console/{QUEUE}?state=exhausted").text


def test_bad_filter_and_page_token_are_clear_400_pages(runner: RunnerServer, page: Page) -> None:
    runner.service.create_queue(PARENT, Queue(QUEUE))
    bad = page.get(f"/console/{QUEUE}?state=<script>x</script>")
    assert bad.status_code == 400 and "state must be one of" in bad.text
    assert "<script>x" not in bad.text and "&lt;script&gt;x" in bad.text
    for bad_token in ("nonsense", "inf/1", "1.5/x"):
        token = page.get(f"/console/{QUEUE}?state=queued&page={bad_token}")
        assert token.status_code == 400 and "Invalid page token." in token.text
    missing = page.get(f"/console/{PARENT}/queues/missing")
    assert missing.status_code == 404 and missing.headers["Content-Type"].startswith("text/html")
    assert page.get("/console/nothing/here").status_code == 404


def test_task_page_decodes_json_text_and_binary_bodies(runner: RunnerServer, page: Page) -> None:
    runner.service.create_queue(PARENT, Queue(QUEUE))
    new_task(runner, "json", json.dumps({"user": "ada", "n": [1, 2]}).encode())
    new_task(runner, "text", b"plain words")
    new_task(runner, "binary", b"\xff\xfe\x00\x01")
    new_task(runner, "big", b"a" * (MAX_SHOWN_BYTES + 10))
    assert "{\n  &#34;user&#34;: &#34;ada&#34;," in page.get(f"/console/{QUEUE}/tasks/json").text
    assert ">plain words</pre>" in page.get(f"/console/{QUEUE}/tasks/text").text
    assert base64.b64encode(b"\xff\xfe\x00\x01").decode() in page.get(f"/console/{QUEUE}/tasks/binary").text
    big = page.get(f"/console/{QUEUE}/tasks/big").text
    assert f"{MAX_SHOWN_BYTES + 10} bytes, first {MAX_SHOWN_BYTES} characters shown" in big


def test_task_page_shows_headers_oidc_and_the_next_attempts_cloud_tasks_headers(
    runner: RunnerServer, page: Page
) -> None:
    runner.service.create_queue(PARENT, Queue(QUEUE))
    new_task(runner, "t", headers={"X-Trace": "abc"}, oidc_token=OidcToken("sa@p.iam", "aud-1"))
    html = page.get(f"/console/{QUEUE}/tasks/t").text
    assert "<th>X-Trace</th><td><code>abc</code>" in html
    assert "<code>sa@p.iam</code>, audience <code>aud-1</code>" in html
    assert "<th>X-CloudTasks-TaskRetryCount</th><td><code>0</code>" in html
    assert "<th>X-CloudTasks-QueueName</th><td><code>q</code>" in html


def test_payloads_headers_and_urls_are_escaped(runner: RunnerServer, page: Page) -> None:
    runner.service.create_queue(PARENT, Queue(QUEUE))
    new_task(runner, "xss", XSS.encode(), headers={"X-Evil": XSS, "X-&'Name": "v"})
    runner.service.create_task(
        QUEUE,
        NewTask(
            HttpRequest(url=f"http://127.0.0.1:9/?q={XSS}", oidc_token=OidcToken(XSS, XSS)),
            name=f"{QUEUE}/tasks/xss-url",
            schedule_time=runner.clock.now() + 60,
        ),
    )
    for path in ("/", f"/console/{QUEUE}", f"/console/{QUEUE}/tasks/xss", f"/console/{QUEUE}/tasks/xss-url"):
        html = page.get(path).text
        assert "<script>alert" not in html and "<img src=x" not in html, path
    shown = page.get(f"/console/{QUEUE}/tasks/xss").text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in shown
    assert "X-&amp;&#39;Name" in shown


def test_actions_need_the_token(runner: RunnerServer, page: Page) -> None:
    runner.service.create_queue(PARENT, Queue(QUEUE))
    missing = page.post(f"/console/{QUEUE}:pause", {})
    wrong = page.post(f"/console/{QUEUE}:pause", {"csrf": "guess"})
    assert missing.status_code == wrong.status_code == 403
    assert "token is missing or out of date" in missing.text
    assert runner.service.get_queue(QUEUE).state is QueueState.RUNNING
    done = page.act(QUEUE, "pause")
    assert done.status_code == 303 and done.headers["Location"] == f"/console/{QUEUE}"
    assert runner.service.get_queue(QUEUE).state is QueueState.PAUSED


def test_cross_site_posts_are_refused_even_with_the_token(runner: RunnerServer, page: Page) -> None:
    runner.service.create_queue(PARENT, Queue(QUEUE))
    token = page.token()
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site", "Origin": None},
        {"Host": "evil.example", "Origin": "http://evil.example"},
    ):
        answer = page.post(f"/console/{QUEUE}:purge", {"csrf": token}, **headers)  # type: ignore[arg-type]
        assert answer.status_code == 403, headers
    assert runner.service.get_queue(QUEUE).purge_time is None
    rebound = page.get("/", Host="attacker.example")
    assert rebound.status_code == 403  # DNS rebinding: a foreign Host cannot read the token


def test_redirects_stay_on_the_runner(runner: RunnerServer, page: Page) -> None:
    runner.service.create_queue(PARENT, Queue(QUEUE))
    for back in ("//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        answer = page.act(QUEUE, "pause", back=back)
        assert answer.status_code == 303 and answer.headers["Location"] == f"/console/{QUEUE}", back
    assert page.act(QUEUE, "resume", back="/").headers["Location"] == "/"


def test_actions_call_the_service(runner: RunnerServer, page: Page) -> None:
    runner.service.create_queue(PARENT, Queue(QUEUE))
    runner.service.pause_queue(QUEUE)
    new_task(runner, "a")
    new_task(runner, "b")
    assert page.act(QUEUE, "resume").status_code == 303
    assert runner.service.get_queue(QUEUE).state is QueueState.RUNNING
    assert page.act(f"{QUEUE}/tasks/a", "delete").headers["Location"] == f"/console/{QUEUE}"
    assert [t.task_id for t in runner.service.list_tasks(QUEUE).items] == ["b"]
    assert page.act(QUEUE, "purge").status_code == 303
    assert runner.service.list_tasks(QUEUE).items == []
    gone = page.act(f"{QUEUE}/tasks/b", "delete")
    assert gone.status_code == 404 and "Requested entity was not found." in gone.text


def test_run_now_and_replay_show_the_attempts(
    runner: RunnerServer, page: Page, httpserver: HTTPServer
) -> None:
    answers = iter([Response("<b>db down</b>", status=500), Response("x" * 5000, status=200)])
    httpserver.expect_request("/w").respond_with_handler(lambda r: next(answers))
    runner.service.create_queue(PARENT, Queue(QUEUE, retry_config=RetryConfig(max_attempts=1)))
    name = f"{QUEUE}/tasks/t"
    runner.service.create_task(
        QUEUE,
        NewTask(HttpRequest(url=httpserver.url_for("/w")), name=name, schedule_time=runner.clock.now() + 60),
    )
    assert page.act(name, "run").status_code == 303
    wait_idle(runner)
    exhausted = page.get(f"/console/{name}").text
    assert 'data-state="EXHAUSTED"' in exhausted and 'data-status="500"' in exhausted
    assert f'action="/console/{name}:replay"' in exhausted
    assert ">Exhausted<" in page.get(f"/console/{QUEUE}?state=exhausted").text
    assert page.act(name, "replay").headers["Location"] == f"/console/{name}"
    wait_idle(runner)
    done = page.get(f"/console/{name}").text
    assert 'data-state="GONE"' in done and 'data-status="500"' in done and 'data-status="200"' in done
    assert '<pre class="excerpt">&lt;b&gt;db down&lt;/b&gt;</pre>' in done
    assert f'<pre class="excerpt">{"x" * 1024}</pre>' in done  # the first KiB only
    stats = page.get("/").text
    assert 'data-stat="last-minute">2 <span class="failed">(1 failed)</span>' in stats
    assert "last 10 min: 1 delivered, 1 failed" in stats
    again = page.act(name, "replay")
    assert again.status_code == 400 and "has not exhausted its retries" in again.text


def test_each_attempt_shows_the_cloud_tasks_headers_it_sent(
    runner: RunnerServer, page: Page, clock: VirtualClock, httpserver: HTTPServer
) -> None:
    answers = iter([500, 200])
    httpserver.expect_request("/w").respond_with_handler(lambda r: Response(status=next(answers)))
    retry = RetryConfig(max_attempts=2, min_backoff=1, max_backoff=1)
    runner.service.create_queue(PARENT, Queue(QUEUE, retry_config=retry))
    task = runner.service.create_task(QUEUE, NewTask(HttpRequest(url=httpserver.url_for("/w"))))
    idle = requests.post(f"{runner.base_url}/runner/v1/waitIdle", json={"within": "0s"}, timeout=15)
    assert idle.status_code == 200
    clock.advance(1)
    wait_idle(runner)
    html = page.get(f"/console/{task.name}").text
    first, second = html.split('data-attempt="')[1:3]
    assert '<span data-sent="RetryCount">RetryCount=0</span>' in first and "PreviousResponse" not in first
    assert '<span data-sent="RetryCount">RetryCount=1</span>' in second
    assert '<span data-sent="ExecutionCount">ExecutionCount=0</span>' in second  # a 5xx is no execution
    assert '<span data-sent="PreviousResponse">PreviousResponse=500</span>' in second


def test_replay_is_refused_without_test_aids(clock: VirtualClock, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/w").respond_with_data("no", status=500)
    runner = start_runner(clock, test_aids=False)
    try:
        page = Page(runner.base_url)
        runner.service.create_queue(PARENT, Queue(QUEUE, retry_config=RetryConfig(max_attempts=1)))
        task = runner.service.create_task(QUEUE, NewTask(HttpRequest(url=httpserver.url_for("/w"))))
        wait_idle(runner)
        assert "Replay is off (--no-test-aids)" in page.get(f"/console/{task.name}").text
        refused = page.act(task.name, "replay")
        assert refused.status_code == 403 and "Test aids are disabled" in refused.text
        assert runner.service.get_task(task.name, include_exhausted=True).state is TaskState.EXHAUSTED
    finally:
        runner.stop()


def test_no_console_serves_no_pages(clock: VirtualClock) -> None:
    runner = start_runner(clock, console=False)
    try:
        assert requests.get(runner.base_url + "/", timeout=10).status_code == 404
        assert requests.get(runner.base_url + "/console/static/console.js", timeout=10).status_code == 404
    finally:
        runner.stop()


def test_static_files_are_served_with_the_same_headers(page: Page) -> None:
    script = page.get("/console/static/console.js")
    assert script.status_code == 200 and script.headers["Content-Type"].startswith("text/javascript")
    assert script.headers["X-Content-Type-Options"] == "nosniff"
    assert page.get("/console/static/../app.py").status_code == 404


def test_server_error_is_an_html_page_without_traceback(runner: RunnerServer, page: Page) -> None:
    runner.service.create_queue(PARENT, Queue(QUEUE))

    def broken(*args: object) -> object:
        raise RuntimeError("boom <b>")

    runner.service.task_counts = broken  # type: ignore[method-assign]
    answer = page.get("/")
    assert answer.status_code == 500 and "Internal error encountered." in answer.text
    assert "boom" not in answer.text and "Traceback" not in answer.text


def test_bad_requests_are_answered_never_5xx(clock: VirtualClock, tmp_path: Path) -> None:
    runner = start_runner(clock, data_dir=tmp_path)  # SQLite: its integers are 64-bit
    try:
        check_bad_requests(runner, Page(runner.base_url))
    finally:
        runner.stop()


def check_bad_requests(runner: RunnerServer, page: Page) -> None:
    runner.service.create_queue(PARENT, Queue(QUEUE))
    token = page.token()
    gets = [
        f"/console/{PARENT}/queues/{XSS}",
        f"/console/{QUEUE}/tasks/{XSS}",
        f"/console/{QUEUE}/tasks/" + "a" * 600,
        f"/console/{QUEUE}?state=queued&page=" + "9" * 5000 + "/1",
        f"/console/{QUEUE}?state=queued&page=1e400/1",
        f"/console/{QUEUE}?state=queued&page=1/99999999999999999999999",
        f"/console/{QUEUE}?state=queued&state=exhausted",
        "/console/%00",
        "/console/projects/p%0a/locations/l/queues/q",
        "/console/static/",
        "/console/static/console.js/..",
    ]
    statuses = {path: page.get(path).status_code for path in gets}
    posts = [
        (f"/console/{QUEUE}:explode", {"csrf": token}),
        (f"/console/{PARENT}/queues/missing:pause", {"csrf": token}),
        (f"/console/{QUEUE}/tasks/{XSS}:run", {"csrf": token}),
        (f"/console/{QUEUE}/tasks/none:replay", {"csrf": token}),
        (f"/console/{QUEUE}:pause", {"csrf": [token, token], "back": ["/", "//x"]}),
    ]
    for path, fields in posts:
        statuses[path] = page.post(path, fields).status_code
    assert {path[:80]: status for path, status in statuses.items() if status >= 500} == {}
    assert statuses[f"/console/{QUEUE}?state=queued&page=1/99999999999999999999999"] == 400
    assert runner.service.get_queue(QUEUE).state is QueueState.PAUSED  # the repeated fields: the first wins


def test_runner_serve_no_console_flag(runner_process: Callable[..., RunnerProcess]) -> None:
    with_console = runner_process(None)
    assert requests.get(with_console.url + "/", timeout=10).status_code == 200
    announced = f"developer console on {with_console.url}/"
    deadline = time.monotonic() + 10  # logged right after the URL line; the reader thread may lag
    while not any(announced in line for line in with_console.log) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(announced in line for line in with_console.log)
    without = runner_process(None, "--no-console")
    assert requests.get(without.url + "/", timeout=10).status_code == 404
    assert not any("developer console" in line for line in without.log)


def test_queue_page_describes_the_queues_http_target(runner: RunnerServer, page: Page) -> None:
    target = HttpTarget(
        uri_override=UriOverride(host="worker.internal", port=8080, path="/tasks"),
        http_method=HttpMethod.PUT,
        header_overrides=(("X-Env", XSS),),
        oidc_token=OidcToken("sa@p.iam", "aud"),
    )
    runner.service.create_queue(PARENT, Queue(QUEUE, http_target=target))
    html = page.get(f"/console/{QUEUE}").text
    assert "URI override (ALWAYS): <code>(task&#39;s scheme)://worker.internal:8080/tasks</code>" in html
    assert "method PUT" in html and "OIDC token for <code>sa@p.iam</code>, audience <code>aud</code>" in html
    assert "<script>" not in html.replace("<script src", "")
