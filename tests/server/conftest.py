"""Helpers for calling the model server's handler in-process."""

from __future__ import annotations

import asyncio
import inspect

import orjson

from tidal.http.server import Request, Response


class Answer:
    def __init__(self, resp: Response) -> None:
        self.status = resp.status
        self.body = resp.body
        self.content_type = resp.content_type
        self.headers = dict(resp.headers or [])

    def json(self):
        return orjson.loads(self.body)


def call(app, method: str, path: str, body=b"", headers=None) -> Answer:
    """Run one request through `app` (a tidal.http.server handler) without a socket."""
    if not isinstance(body, (bytes, bytearray)):
        body = orjson.dumps(body)
    req = Request(method, path.encode("latin-1"), {k.lower(): v for k, v in (headers or {}).items()},
                  bytes(body), "test", None)
    result = app(req)
    if inspect.isawaitable(result):
        result = asyncio.run(result)
    return Answer(result)
