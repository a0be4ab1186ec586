"""A real tidal HttpServer on 127.0.0.1 in its own thread and event loop, for tests that drive it from outside."""

from __future__ import annotations

import asyncio
import threading

from tidal.http.server import HttpServer


class ThreadedServer:
    """Subclasses define `handle(req)`; `start()` serves it on a free port, `stop()` drains and joins."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server: HttpServer | None = None
        self.thread: threading.Thread | None = None

    def handle(self, req):
        raise NotImplementedError

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

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(1.0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
