"""The console handler served by a real HttpServer in its own thread, over a fake provider the test drives."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.console.fake_provider import FakeProvider
from tidal.clock import RealClock
from tidal.console.app import ConsoleApp
from tidal.http.server import HttpServer, error_response

TOKEN = "s3cret-token"


class ConsoleServer:
    def __init__(self, app: ConsoleApp) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.server: HttpServer | None = None

    def handle(self, req):
        resp = self.app.handle(req)
        return resp if resp is not None else error_response(404, f"not found: {req.path}")

    def start(self) -> None:
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = HttpServer(self.handle, "127.0.0.1", 0)
            self.loop.run_until_complete(self.server.start())
            ready.set()
            self.loop.run_forever()
        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        ready.wait(10)

    def call(self, fn, *args):
        """Run fn in the server's loop (the provider is not thread-safe, like the control plane's state)."""
        async def run():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(1.0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/console/"


@pytest.fixture
def provider():
    return FakeProvider(RealClock())


@pytest.fixture
def console(provider):
    s = ConsoleServer(ConsoleApp(provider, token=TOKEN))
    s.start()
    yield s
    s.stop()
