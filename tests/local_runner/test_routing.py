"""The REST path matcher: method and pattern pick the handler, whatever was matched before."""

from __future__ import annotations

from local_runner.api.routing import QUEUE, Router


def test_each_match_has_its_own_params_and_later_routes_count() -> None:
    router = Router()
    router.add("GET", rf"(?P<name>{QUEUE})", "get")
    path = "projects/p/locations/l/queues/q"
    first = router.match("get", path)
    assert first is not None and first.route.handler == "get"
    first.params["name"] = "changed"
    again = router.match("GET", path)
    assert again is not None and again.params == {"name": path}
    assert router.match("POST", path + ":pause") is None
    router.add("POST", rf"(?P<name>{QUEUE}):pause", "pause")
    paused = router.match("POST", path + ":pause")
    assert paused is not None and paused.route.handler == "pause"
