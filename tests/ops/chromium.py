"""Headless Chromium driven over the Chrome DevTools Protocol, for tests of the web view.

No browser automation package: Debian's ``chromium`` runs with ``--remote-debugging-port=0``,
writes the port it chose to ``DevToolsActivePort`` in its profile directory, and we speak CDP
(JSON over a WebSocket) with the ``websockets`` client that callscribe already depends on.

:func:`ensure_chromium` finds the browser; when it is missing and we are root with apt-get, it
installs Debian's ``chromium`` package (about 100 packages with its dependencies); only when that
fails does the test skip, loudly. ``CALLSCRIBE_TEST_BROWSER=0`` skips the browser tests without
installing anything.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import seconds

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--no-default-browser-check", "--window-size=1280,800",
)


def find_chromium() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def _loud_skip(reason: str) -> None:
    banner = "!" * 78
    sys.stderr.write(f"\n{banner}\nSKIPPING THE HEADLESS CHROMIUM TEST: {reason}\n{banner}\n")
    pytest.skip(f"HEADLESS CHROMIUM TEST NOT RUN: {reason}")


def ensure_chromium(install_timeout_s: float = 240) -> str:
    """The path of a Chromium binary, installing Debian's ``chromium`` if it is missing."""
    if os.environ.get("CALLSCRIBE_TEST_BROWSER") == "0":
        _loud_skip("CALLSCRIBE_TEST_BROWSER=0")
    found = find_chromium()
    if found:
        return found
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        _loud_skip("chromium is not installed and this is not root with apt-get; "
                   "install it with `apt-get install -y chromium`")
    sys.stderr.write("\ninstalling Debian's chromium with apt-get for the web-view test "
                     "(CALLSCRIBE_TEST_BROWSER=0 skips it)\n")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # With its recommended packages: they bring the fonts the screenshot needs.
    attempts = (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"],
                ["apt-get", "install", "-y", "chromium"])
    output = ""
    for command in attempts:
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True,
                                  timeout=install_timeout_s, check=False)
        except subprocess.TimeoutExpired:
            output = f"{' '.join(command)} timed out after {install_timeout_s:.0f}s"
            break
        output = done.stdout[-2000:] + done.stderr[-2000:]
        found = find_chromium()
        if found:
            return found
    _loud_skip(f"`apt-get install -y chromium` did not install it:\n{output}")
    raise AssertionError("unreachable")  # pytest.skip raised


class Page:
    """One browser tab over CDP: send commands, evaluate JavaScript, collect page errors."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.errors: list[str] = []  # uncaught exceptions and console.error lines
        self._reader = asyncio.create_task(self._read(), name="cdp-reader")

    async def _read(self) -> None:
        async for raw in self._ws:
            message = json.loads(raw)
            waiter = self._waiting.pop(message.get("id", -1), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message)
            elif message.get("method") == "Runtime.exceptionThrown":
                details = message["params"]["exceptionDetails"]
                self.errors.append(details.get("exception", {}).get("description")
                                   or details.get("text", "exception"))
            elif message.get("method") == "Runtime.consoleAPICalled":
                params = message["params"]
                if params.get("type") == "error":
                    self.errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                                for a in params.get("args", [])))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = waiter
        await self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        reply = await asyncio.wait_for(waiter, seconds(30))
        if "error" in reply:
            raise RuntimeError(f"CDP {method} failed: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def poll(self, expression: str, timeout_s: float) -> Any:
        """Evaluate ``expression`` every 100 ms until it is truthy or ``timeout_s`` passed;
        return its last value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value
            await asyncio.sleep(0.1)

    async def wait_for(self, expression: str, timeout_s: float, what: str) -> Any:
        """Poll ``expression`` until it is truthy; fail saying ``what`` did not happen."""
        value = await self.poll(expression, timeout_s)
        if not value:
            text = await self.evaluate("document.body && document.body.innerText")
            raise AssertionError(f"{what} within {timeout_s:.0f}s; page errors "
                                 f"{self.errors}; page text:\n{text}")
        return value

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'", 30, "the page did not load")

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png")
        await asyncio.to_thread(_write, path, base64.b64decode(shot["data"]))

    async def close(self) -> None:
        self._reader.cancel()
        await self._ws.close()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _launch(binary: str, profile: Path, log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "about:blank"], stdout=log, stderr=subprocess.STDOUT)


def _devtools_port(profile: Path, process: subprocess.Popen[bytes], timeout_s: float) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with code {process.returncode} at start")
        if marker.exists():
            first = marker.read_text().split("\n", 1)[0].strip()
            if first.isdigit():
                return int(first)
        time.sleep(0.05)
    raise RuntimeError(f"chromium wrote no {marker.name} within {timeout_s:.0f}s")


def _page_target(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
        targets = json.load(response)
    for target in targets:
        if target.get("type") == "page":
            return str(target["webSocketDebuggerUrl"])
    raise RuntimeError(f"chromium has no page target: {targets}")


@contextlib.asynccontextmanager
async def open_page(binary: str, *, log_path: Path,
                    start_timeout_s: float = 30) -> AsyncIterator[Page]:
    """Start headless Chromium with a throw-away profile and yield its first tab."""
    with tempfile.TemporaryDirectory(prefix="callscribe-chromium-") as profile_dir:
        profile = Path(profile_dir)
        process = await asyncio.to_thread(_launch, binary, profile, log_path)
        try:
            port = await asyncio.to_thread(_devtools_port, profile, process, start_timeout_s)
            target = await asyncio.to_thread(_page_target, port)
            async with connect(target, max_size=None, open_timeout=start_timeout_s) as ws:
                page = Page(ws)
                await page.send("Runtime.enable")
                await page.send("Page.enable")
                await page.send("Emulation.setDeviceMetricsOverride", width=1280, height=800,
                                deviceScaleFactor=1, mobile=False)
                try:
                    yield page
                finally:
                    await page.close()
        finally:
            process.terminate()
            try:
                await asyncio.to_thread(process.wait, 10)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, 10)
