"""The console handler served by a real HttpServer in its own thread, over a fake provider the test drives."""

from __future__ import annotations

import asyncio

import pytest

from tests.console.fake_provider import FakeProvider
from tests.threaded_server import ThreadedServer
from tidal.clock import RealClock
from tidal.console.app import ConsoleApp
from tidal.http.server import error_response

TOKEN = "s3cret-token"


class ConsoleServer(ThreadedServer):
    def __init__(self, app: ConsoleApp) -> None:
        super().__init__()
        self.app = app

    def handle(self, req):
        resp = self.app.handle(req)
        return resp if resp is not None else error_response(404, f"not found: {req.path}")

    def call(self, fn, *args):
        """Run fn in the server's loop (the provider is not thread-safe, like the control plane's state)."""
        async def run():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

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
