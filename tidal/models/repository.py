"""A model's base path in any fsspec store: numeric version directories, version policy, local cache for remote stores."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

from tidal.errors import FailedPrecondition, NotFound, TidalError, Unavailable
from tidal.models.config import VersionPolicy

log = logging.getLogger(__name__)

_VERSION_DIR = re.compile(r"\d{1,18}")


def parse_version_dir(name: str) -> int | None:
    """A directory name that is a non-negative integer is a version (TF Serving's rule); others are ignored."""
    return int(name) if _VERSION_DIR.fullmatch(name) else None


def select_versions(available: Iterable[int], policy: VersionPolicy) -> tuple[int, ...]:
    """The versions a policy serves out of those present, ascending."""
    present = sorted(set(available))
    if policy.kind == "all":
        return tuple(present)
    if policy.kind == "latest":
        return tuple(present[-policy.num_versions:]) if present else ()
    wanted = set(policy.versions)
    return tuple(v for v in present if v in wanted)


def redact(url: str) -> str:
    """A URL fit for logs: any user:password part is replaced."""
    return re.sub(r"(?<=://)[^/@]*@", "***@", url)


def _with_scheme(endpoint: str, https: bool) -> str:
    return endpoint if "://" in endpoint else ("https://" if https else "http://") + endpoint


def _off(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("0", "false", "no", "off")


def storage_options_from_env(protocol: str, env: Mapping[str, str]) -> dict[str, Any]:
    """fsspec storage options for a protocol, from the standard environment variables.

    S3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, endpoint from
    AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, or TF Serving's S3_ENDPOINT (+ S3_USE_HTTPS,
    S3_VERIFY_SSL), region from AWS_REGION. OSS (ossfs): OSS_ENDPOINT, OSS_ACCESS_KEY_ID,
    OSS_ACCESS_KEY_SECRET, OSS_SESSION_TOKEN (or the ALIBABA_CLOUD_* names). GCS: gcsfs reads
    GOOGLE_APPLICATION_CREDENTIALS itself.
    """
    opts: dict[str, Any] = {}
    if protocol in ("s3", "s3a"):
        client: dict[str, Any] = {}
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        if not endpoint and env.get("S3_ENDPOINT"):
            endpoint = _with_scheme(env["S3_ENDPOINT"], https=not _off(env.get("S3_USE_HTTPS")))
        if endpoint:
            client["endpoint_url"] = endpoint
        if _off(env.get("S3_VERIFY_SSL")):
            client["verify"] = False
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if region:
            client["region_name"] = region
        if client:
            opts["client_kwargs"] = client
        if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
            opts["key"] = env["AWS_ACCESS_KEY_ID"]
            opts["secret"] = env["AWS_SECRET_ACCESS_KEY"]
            if env.get("AWS_SESSION_TOKEN"):
                opts["token"] = env["AWS_SESSION_TOKEN"]
    elif protocol == "oss":
        endpoint = env.get("OSS_ENDPOINT")
        if endpoint:
            opts["endpoint"] = _with_scheme(endpoint, https=True)
        key = env.get("OSS_ACCESS_KEY_ID") or env.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
        secret = env.get("OSS_ACCESS_KEY_SECRET") or env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
        if key and secret:
            opts["key"] = key
            opts["secret"] = secret
            token = env.get("OSS_SESSION_TOKEN") or env.get("ALIBABA_CLOUD_SECURITY_TOKEN")
            if token:
                opts["token"] = token
    return opts


_EXTRAS = {"s3": "s3", "s3a": "s3", "oss": "oss", "gs": "gcs", "gcs": "gcs"}


def default_cache_dir(env: Mapping[str, str]) -> str:
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tidal", "models")


class Repository:
    """One model's versions under a base path; remote versions are copied into a local cache to load."""

    def __init__(self, base_path: str, *, cache_dir: str | None = None,
                 storage_options: Mapping[str, Any] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.base_path = base_path
        self.display = redact(base_path)
        self._env = os.environ if env is None else env
        self._cache_dir = cache_dir
        self._extra_options = dict(storage_options or {})
        self._fs = None
        self._root = ""
        self._dirs: dict[int, str] = {}

    def _filesystem(self):
        if self._fs is None:
            import fsspec.core

            protocol = self.base_path.split("://", 1)[0].lower() if "://" in self.base_path else "file"
            options = storage_options_from_env(protocol, self._env)
            options.update(self._extra_options)
            try:
                self._fs, self._root = fsspec.core.url_to_fs(self.base_path, **options)
            except ImportError:
                extra = _EXTRAS.get(protocol)
                hint = f": pip install tidal[{extra}]" if extra else ""
                raise FailedPrecondition(
                    f"model base path {self.display}: no filesystem for '{protocol}://' is installed{hint}") from None
            except ValueError as e:
                raise FailedPrecondition(f"model base path {self.display}: {e}") from None
            self._root = self._root.rstrip("/") or self._root
        return self._fs

    @property
    def is_local(self) -> bool:
        from fsspec.implementations.local import LocalFileSystem

        return isinstance(self._filesystem(), LocalFileSystem)

    def list_versions(self) -> list[int]:
        """The version numbers present now (blocking I/O: call it off the event loop)."""
        fs = self._filesystem()
        try:
            fs.invalidate_cache(self._root)
            entries = fs.ls(self._root, detail=True)
        except FileNotFoundError:
            raise NotFound(f"model base path {self.display} does not exist") from None
        except NotADirectoryError:
            raise FailedPrecondition(f"model base path {self.display} is not a directory") from None
        except TidalError:
            raise
        except Exception as e:  # any store error (network, permissions) is reported, never fatal
            raise Unavailable(f"cannot list model base path {self.display}: {type(e).__name__}: {_short(e)}") from None
        if (len(entries) == 1 and entries[0].get("type") == "file"
                and entries[0]["name"].rstrip("/") == self._root.rstrip("/")):
            raise FailedPrecondition(f"model base path {self.display} is a file, not a directory")
        dirs: dict[int, str] = {}
        for entry in entries:
            if entry.get("type") != "directory":
                continue
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            version = parse_version_dir(name)
            if version is None:
                continue
            # '1' and '01' are the same version: prefer the canonical spelling.
            if version not in dirs or name == str(version):
                dirs[version] = entry["name"].rstrip("/")
        self._dirs = dirs
        return sorted(dirs)

    def _remote_dir(self, version: int) -> str:
        return self._dirs.get(version) or f"{self._root}/{version}"

    def _cache_root(self) -> str:
        digest = hashlib.sha256(self.base_path.encode()).hexdigest()[:16]
        tail = re.sub(r"[^A-Za-z0-9._-]", "_", self._root.rstrip("/").rsplit("/", 1)[-1])[:40] or "model"
        return os.path.join(self._cache_dir or default_cache_dir(self._env), f"{tail}-{digest}")

    def local_path(self, version: int) -> str:
        """A local directory holding the version's files, downloading it first for a remote store."""
        fs = self._filesystem()
        remote = self._remote_dir(version)
        if self.is_local:
            return remote
        final = os.path.join(self._cache_root(), str(version))
        if os.path.isdir(final):
            return final  # versions are immutable once published (TF Serving assumes the same)
        os.makedirs(self._cache_root(), exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{version}-", dir=self._cache_root())
        try:
            fs.invalidate_cache(remote)
            files = fs.find(remote, detail=False)
            if not files:
                raise NotFound(f"version {version} under {self.display} holds no files")
            prefix = remote.rstrip("/") + "/"
            for path in files:
                if not path.startswith(prefix):
                    continue
                rel = path[len(prefix):]
                target = os.path.join(staging, *rel.split("/"))
                if not os.path.realpath(target).startswith(os.path.realpath(staging) + os.sep):
                    raise FailedPrecondition(f"refusing to write outside the cache for {rel!r}")
                os.makedirs(os.path.dirname(target), exist_ok=True)
                fs.get_file(path, target)
            try:
                os.rename(staging, final)  # atomic: readers see a whole version or none
            except OSError:
                if not os.path.isdir(final):
                    raise
                shutil.rmtree(staging, ignore_errors=True)  # another process finished first
            return final
        except TidalError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        except Exception as e:
            shutil.rmtree(staging, ignore_errors=True)
            raise Unavailable(
                f"cannot download version {version} from {self.display}: {type(e).__name__}: {_short(e)}") from None

    def evict(self, version: int) -> None:
        """Drop a cached copy (after a failed load, so a retry downloads afresh)."""
        if self._fs is None or self.is_local:
            return
        shutil.rmtree(os.path.join(self._cache_root(), str(version)), ignore_errors=True)


def _short(e: BaseException, limit: int = 300) -> str:
    text = str(e).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
