"""Headless Chromium driven over the DevTools protocol (CDP) with aiohttp's WebSocket client.

No browser download and no new dependency: Debian's ``chromium`` package and the aiohttp the runner
already uses. Each call runs the loop until its answer arrives; waits poll a condition in the page.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1400,900",
    "--remote-debugging-port=0",
)


def require_chromium() -> str:
    """The browser's path; skips the test without one, except on CI, where it must be installed."""
    found = shutil.which(CHROMIUM)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing; .ci/run installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    return found


class BrowserError(AssertionError):
    """The page did not reach the expected state, or the browser answered with an error."""


class Chromium:
    """One headless browser with one tab, closed with :meth:`close`."""

    def __init__(self, executable: str, timeout: float = 15.0) -> None:
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="console-chromium-")
        self._process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._loop = asyncio.new_event_loop()
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            self._run(self._connect())
        except BaseException:
            self.close()
            raise

    # -- plumbing ------------------------------------------------------------------------------------

    def _run(self, coroutine: Any) -> Any:
        return self._loop.run_until_complete(asyncio.wait_for(coroutine, self.timeout))

    async def _connect(self) -> None:
        port_file = Path(self._profile, "DevToolsActivePort")
        while not port_file.exists() or not port_file.read_text().strip():
            if self._process.poll() is not None:
                raise BrowserError(f"chromium exited with {self._process.returncode}")
            await asyncio.sleep(0.05)
        port = port_file.read_text().split()[0]
        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{port}/json/list") as answer:
            targets = await answer.json()
        page = next(t for t in targets if t["type"] == "page")
        self._ws = await self._session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self._ws is not None
        call_id = next(self._ids)
        await self._ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads((await self._ws.receive()).data)
            if message.get("id") == call_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one CDP command and return its result."""
        return dict(self._run(self._call(method, params)))

    # -- what tests use --------------------------------------------------------------------------

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        """Navigate and wait until the document has loaded."""
        self.call("Page.navigate", url=url)
        self.wait_for(f"document.readyState === 'complete' && location.href === {json.dumps(url)}")

    def wait_for(self, condition: str, timeout: float | None = None) -> Any:
        """Poll a JavaScript condition until it is truthy; its value, or a failure after the timeout."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                value = self.evaluate(condition)
            except BrowserError:  # the page is navigating: its context went away
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {condition}; page: {self.text()[:2000]}")
            self._run(asyncio.sleep(0.05))

    def click(self, selector: str) -> None:
        """Click the first element matching a CSS selector (confirm dialogs answered yes)."""
        found = self.evaluate(
            "(() => { window.confirm = () => true;"
            f" const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return false; e.click(); return true; })()"
        )
        if not found:
            raise BrowserError(f"nothing matches {selector}; page: {self.text()[:2000]}")

    def text(self) -> str:
        """The page's visible text."""
        try:
            return str(self.evaluate("document.body ? document.body.innerText : ''"))
        except BrowserError as error:
            return f"<unreadable: {error}>"

    def screenshot(self, path: Path, max_height: float = 1000) -> None:
        """Save a PNG of the page, down to ``max_height`` CSS pixels."""
        metrics = self.call("Page.getLayoutMetrics")
        size = dict(metrics.get("cssContentSize") or metrics["contentSize"])
        size["height"] = min(size["height"], max_height)
        data = self.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        )["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        """Close the connection, end the browser process and remove its profile."""
        try:
            if self._ws is not None:
                self._run(self._ws.close())
            if self._session is not None:
                self._run(self._session.close())
        finally:
            self._loop.close()
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(10)
            shutil.rmtree(self._profile, ignore_errors=True)
