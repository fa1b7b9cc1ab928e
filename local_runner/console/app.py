"""The console's routes: three pages, their live fragments, and the actions behind their buttons.

Pages read through :class:`~local_runner.service.TasksService`; every action calls the service method
the REST API calls for the same thing (PauseQueue, ResumeQueue, PurgeQueue, RunTask, DeleteTask, and
the runner's Replay extension, refused like it under ``--no-test-aids``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from aiohttp import web

from local_runner.api.routing import QUEUE, TASK, Router
from local_runner.api.runner_ext import require_test_aids
from local_runner.console import security
from local_runner.console.stats import COUNT_CAP, OutcomeLog
from local_runner.console.templating import environment
from local_runner.console.views import FILTERS, Pages
from local_runner.engine.attempts import Outcome
from local_runner.engine.pacing import QueuePacer
from local_runner.errors import ApiError, Code, InvalidArgument, NotFound, StoreError
from local_runner.model import Queue, Task
from local_runner.service import TasksService

log = logging.getLogger("local_runner.console")

PREFIX = "/console/"
STATIC = {"console.js": "text/javascript", "console.css": "text/css"}
#: The request header the live-update script sends to get a page's live part only.
FRAGMENT_HEADER = "X-Console-Fragment"
#: How often the pages refresh their live part, in milliseconds.
REFRESH_MS = 2000


class DispatchLoop(Protocol):
    """What the console reads of the dispatch loop: each queue's pacing and every recorded attempt."""

    #: Called with each attempt the loop records.
    outcome_observers: list[Callable[[Task, Outcome], None]]

    def pacer(self, queue_name: str) -> QueuePacer | None:
        """The queue's pacing (attempts in flight, effective rate), once its worker has run."""


def queue_path(name: str) -> str:
    """The console path of a queue or task name."""
    return PREFIX + quote(name, safe="/:@")


class Console:
    """The developer console of one runner process (its token lives as long as the process)."""

    def __init__(self, service: TasksService, test_aids: bool = True) -> None:
        self.service = service
        self.test_aids = test_aids
        self.token = security.new_token()
        self.outcomes = OutcomeLog()
        self.pages = Pages(service, self.outcomes)
        self.dispatch_loop: DispatchLoop | None = None
        self._env = environment()
        self._env.globals.update(
            csrf=self.token,
            token_field=security.TOKEN_FIELD,
            path=queue_path,
            test_aids=test_aids,
            refresh_ms=REFRESH_MS,
            count_cap=COUNT_CAP,
        )
        router = self._router = Router()
        router.add("GET", rf"(?P<name>{QUEUE})", self.queue_page, ("state", "page"))
        router.add("GET", rf"(?P<name>{TASK})", self.task_page)
        actions: dict[str, Callable[[str], object]] = {
            "pause": service.pause_queue,
            "resume": service.resume_queue,
            "purge": service.purge_queue,
        }
        for verb, method in actions.items():
            router.add("POST", rf"(?P<name>{QUEUE}):{verb}", self._queue_action(method))
        router.add("POST", rf"(?P<name>{TASK}):run", self._task_action(service.run_task))
        router.add("POST", rf"(?P<name>{TASK}):delete", self._task_action(service.delete_task, to_queue=True))
        router.add("POST", rf"(?P<name>{TASK}):replay", self._task_action(self._replay_task))

    def register(self, app: web.Application) -> None:
        """Serve the queues page at ``/`` and everything else under ``/console/``."""
        app.router.add_get("/", self.queues_page)
        app.router.add_route("*", PREFIX + r"{tail:[\s\S]*}", self._view)

    def attach(self, dispatch_loop: DispatchLoop) -> None:
        """Read live pacing from ``dispatch_loop`` (the scheduler) and count its attempts' outcomes."""
        self.dispatch_loop = dispatch_loop
        dispatch_loop.outcome_observers.append(self.outcomes.record)

    # -- plumbing ----------------------------------------------------------------------------------

    async def _view(self, request: web.Request) -> web.StreamResponse:
        tail = request.path[len(PREFIX) :]
        if request.method == "GET" and tail.startswith("static/") and tail[7:] in STATIC:
            return self._static(tail[7:])
        match = self._router.match(request.method, tail)
        if match is None:
            return self._error(request, NotFound(f"The requested URL {request.path} was not found."))
        return await self._guarded(request, lambda: match.route.handler(request, match.params["name"]))

    async def _guarded(self, request: web.Request, handler: Callable[[], Any]) -> web.StreamResponse:
        """Run a handler; errors become an HTML page with the API's status and message."""
        try:
            response = handler()
            if not isinstance(response, web.StreamResponse):
                response = await response
            return security.secure(response)
        except ApiError as error:
            return self._error(request, error)
        except StoreError as error:
            log.error("%s %s: %s", request.method, request.path, error)
            return self._error(
                request, ApiError(f"The runner cannot use its task store: {error}", Code.UNAVAILABLE)
            )
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return self._error(request, ApiError("Internal error encountered.", Code.INTERNAL))

    def _static(self, filename: str) -> web.StreamResponse:
        data = resources.files("local_runner.console").joinpath("static", filename).read_bytes()
        response = web.Response(body=data, content_type=STATIC[filename], charset="utf-8")
        return security.secure(response)

    def _render(self, request: web.Request, template: str, **context: Any) -> web.Response:
        page = self._env.get_template(template)
        context["now"] = self.service.clock.now()
        context.setdefault("refresh", True)
        if request.headers.get(FRAGMENT_HEADER) == "1":
            html = "".join(page.blocks["live"](page.new_context(context)))
        else:
            html = page.render(context)
        return web.Response(text=html, content_type="text/html", charset="utf-8")

    def _error(self, request: web.Request, error: ApiError) -> web.StreamResponse:
        response = self._render(request, "error.html", error=error, status=error.code.name, refresh=False)
        response.set_status(error.code.http_status)
        return security.secure(response)

    def _pacer(self, queue: Queue) -> QueuePacer | None:
        return self.dispatch_loop.pacer(queue.name) if self.dispatch_loop is not None else None

    # -- pages -------------------------------------------------------------------------------------

    async def queues_page(self, request: web.Request) -> web.StreamResponse:
        """Every queue with its state, configuration, stats and chart."""

        def render() -> web.Response:
            rows = [self.pages.queue_row(queue, self._pacer(queue)) for queue in self.pages.all_queues()]
            return self._render(request, "queues.html", rows=rows)

        return await self._guarded(request, render)

    def queue_page(self, request: web.Request, name: str) -> web.Response:
        """One queue: stats and one page of its tasks, filtered by state."""
        state_filter = request.query.get("state", "")
        if state_filter not in FILTERS:
            allowed = ", ".join(repr(f) for f in FILTERS)
            raise InvalidArgument(f"state must be one of {allowed}; got {state_filter!r}.")
        queue = self.service.get_queue(name)
        page_token = request.query.get("page", "")
        tasks, next_token = self.pages.tasks(queue, state_filter, page_token)
        return self._render(
            request,
            "queue.html",
            row=self.pages.queue_row(queue, self._pacer(queue)),
            tasks=tasks,
            filters=FILTERS,
            state_filter=state_filter,
            first_page=not page_token,
            next_page=_page_query(state_filter, next_token) if next_token else "",
            self_query=_page_query(state_filter, page_token),
        )

    def task_page(self, request: web.Request, name: str) -> web.Response:
        """One task: body, headers, OIDC settings, attempt history."""
        return self._render(request, "task.html", detail=self.pages.task(name))

    # -- actions -----------------------------------------------------------------------------------

    async def _form(self, request: web.Request) -> Mapping[str, Any]:
        form = await request.post()
        if not security.token_matches(self.token, form.get(security.TOKEN_FIELD)):
            raise ApiError(
                "The form's token is missing or out of date (the runner restarted?): reload the page and "
                "try again. The console accepts changes only from its own pages.",
                Code.PERMISSION_DENIED,
            )
        return form

    def _queue_action(self, method: Callable[[str], object]) -> Callable[..., Any]:
        async def action(request: web.Request, name: str) -> web.StreamResponse:
            form = await self._form(request)
            method(name)
            return _see_other(security.local_path(form.get("back"), queue_path(name)))

        return action

    def _task_action(self, method: Callable[[str], object], to_queue: bool = False) -> Callable[..., Any]:
        async def action(request: web.Request, name: str) -> web.StreamResponse:
            form = await self._form(request)
            method(name)
            default = queue_path(name.rpartition("/tasks/")[0]) if to_queue else queue_path(name)
            return _see_other(security.local_path(form.get("back"), default))

        return action

    def _replay_task(self, name: str) -> Task:
        require_test_aids(self.test_aids)
        return self.service.replay_task(name)


def _page_query(state_filter: str, page_token: str) -> str:
    params = {key: value for key, value in (("state", state_filter), ("page", page_token)) if value}
    return "?" + urlencode(params) if params else ""


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})
