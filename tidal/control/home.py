"""Where an installation's state lives (TIDAL_HOME): database, logs, pid file, the API token and the secret store."""

from __future__ import annotations

import json
import os
import secrets as _secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from tidal.errors import NotFound
from tidal.files import write_private


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Home":
        env = os.environ if env is None else env
        return cls(Path(env.get("TIDAL_HOME") or Path.home() / ".tidal").expanduser().resolve())

    def ensure(self) -> "Home":
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for d in (self.logs, self.run_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    @property
    def db(self) -> Path:
        return self.root / "state.db"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def pid_file(self) -> Path:
        return self.root / "tidal.pid"

    @property
    def log_file(self) -> Path:
        return self.logs / "control-plane.log"

    @property
    def token_file(self) -> Path:
        return self.root / "token"

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.json"

    @property
    def address_file(self) -> Path:
        """Where a running control plane says which ports it listens on (no secrets in it)."""
        return self.root / "address.json"

    @property
    def catalog_file(self) -> Path:
        return self.root / "catalog.json"

    # -- the API token
    def token(self, create: bool = False) -> str:
        if self.token_file.exists():
            return self.token_file.read_text().strip()
        if not create:
            raise NotFound(f"no API token in {self.root} (start the control plane with `tidal up`)")
        token = _secrets.token_urlsafe(32)
        write_private(self.token_file, token + "\n")
        return token

    # -- secrets: object-store credentials, by name; the state database holds only the name
    def put_secret(self, name: str, values: dict[str, str]) -> None:
        data = self._secrets()
        data[name] = values
        write_private(self.secrets_file, json.dumps(data))

    def get_secret(self, name: str) -> dict[str, str]:
        data = self._secrets()
        if name not in data:
            raise NotFound(f"secret {name!r} not found in the secret store")
        return data[name]

    def delete_secret(self, name: str) -> None:
        data = self._secrets()
        if data.pop(name, None) is not None:
            write_private(self.secrets_file, json.dumps(data))

    def _secrets(self) -> dict[str, dict[str, str]]:
        try:
            return json.loads(self.secrets_file.read_text())
        except FileNotFoundError:
            return {}

    def write_address(self, data: dict) -> None:
        write_private(self.address_file, json.dumps(data))

    def read_address(self) -> dict | None:
        try:
            return json.loads(self.address_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
