"""The API client the CLI uses: finds the control plane through TIDAL_HOME and sends the token."""

from __future__ import annotations

import http.client
import json
import os
from typing import Any
from urllib.parse import quote, urlsplit

from tidal.control.home import Home
from tidal.errors import Code, TidalError, Unavailable

_STATUS_CODES = {400: Code.INVALID_ARGUMENT, 401: Code.UNAUTHENTICATED, 403: Code.PERMISSION_DENIED,
                 404: Code.NOT_FOUND, 409: Code.ALREADY_EXISTS, 503: Code.UNAVAILABLE}


class ApiClient:
    def __init__(self, base_url: str, token: str | None, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.token = token
        self.timeout = timeout

    @classmethod
    def for_home(cls, home: Home | None = None, env: dict | None = None) -> "ApiClient":
        env = os.environ if env is None else env
        home = home or Home.from_env(env)
        url = env.get("TIDAL_API")
        if not url:
            addr = home.read_address()
            if not addr:
                raise Unavailable(f"the control plane is not running for {home.root} (start it with `tidal up`)")
            url = addr["api"]
        token = env.get("TIDAL_TOKEN") or home.token()
        return cls(url, token)

    def request(self, method: str, path: str, body: Any = None, query: dict | None = None) -> Any:
        url = "/api/v1" + path
        if query:
            url += "?" + "&".join(f"{quote(str(k))}={quote(str(v))}" for k, v in query.items() if v is not None)
        data = json.dumps(body).encode() if body is not None else b""
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, url, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except OSError as exc:
            raise Unavailable(f"cannot reach the control plane at {self.host}:{self.port}: {exc} "
                              f"(is it running? `tidal up`)") from None
        finally:
            conn.close()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = {"error": raw.decode(errors="replace")[:200]}
        if resp.status >= 400:
            message = payload.get("error") if isinstance(payload, dict) else str(payload)
            raise TidalError(message or f"HTTP {resp.status}", _STATUS_CODES.get(resp.status, Code.UNKNOWN))
        return payload

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query or None)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body if body is not None else {})

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
