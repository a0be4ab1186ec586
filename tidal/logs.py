"""Logging for every Tidal process: one line per event, repeats collapsed into a count, files rotated by size."""

from __future__ import annotations

import atexit
import logging
import sys
from pathlib import Path
import threading
import time
from logging.handlers import RotatingFileHandler
from typing import Callable, Mapping, TextIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tidal.errors import UserError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ENV = {"file": "TIDAL_LOG_FILE", "level": "TIDAL_LOG_LEVEL", "max_bytes": "TIDAL_LOG_MAX_BYTES",
       "backups": "TIDAL_LOG_BACKUPS", "repeat_window": "TIDAL_LOG_REPEAT_SECONDS"}


class LogSettings(BaseModel):
    """Where a process logs. Every field has an environment variable (ENV), so a parent can set them for a child."""

    model_config = ConfigDict(extra="forbid")
    file: str | None = Field(default=None, description="log to this file, rotated by size; else to stderr")
    level: str = Field(default="INFO", pattern=r"(?i)^(debug|info|warning|error|critical)$")
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="rotate when the file reaches this")
    backups: int = Field(default=5, ge=0, description="rotated files kept (FILE.1 ... FILE.N)")
    repeat_window: float = Field(default=10.0, ge=0, description="seconds a repeated message is counted, not written")

    @classmethod
    def from_env(cls, env: Mapping[str, str], **given) -> "LogSettings":
        """Settings from `env` (TIDAL_LOG_*), with `given` values that are not None winning."""
        values = {k: env[v] for k, v in ENV.items() if env.get(v)}
        values.update({k: v for k, v in given.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else "?"
            raise UserError(f"log setting {ENV.get(field, field)}: {first['msg']}") from None


class RepeatCollapser(logging.Filter):
    """Writes the first of a run of same-template messages and counts the rest for one summary line.

    The key is (logger, level, message template), so "refused a request from %s" from 5,000
    clients is one line, then "... repeated 4,999 more times in 10 s". Summaries go out when a
    window ends: on the next record of any kind, from `flush` (a timer calls it), or at exit.
    """

    def __init__(self, window: float, sink: logging.Handler, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 1000) -> None:
        super().__init__()
        self.window = window
        self.sink = sink
        self.clock = clock
        self.max_keys = max_keys
        self._lock = threading.Lock()
        # key -> [window start, repeats counted, first message's text, its logger name, its level]
        self._seen: dict[tuple, list] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "tidal_summary", False) or self.window <= 0:
            return True
        msg = record.msg if isinstance(record.msg, str) else repr(type(record.msg))
        # Warnings, errors and lines marked `tidal_fold` (a refused request) fold by template: a flood differs
        # only in its arguments. Other lines fold only when the very same, so distinct facts ("model a: version 1
        # available", then model b's; one event, then another) are never hidden behind one another.
        by_template = record.levelno >= logging.WARNING or getattr(record, "tidal_fold", False)
        key = (record.name, record.levelno, msg if by_template else _first_line(record))
        now = self.clock()
        with self._lock:
            due = self._take_due(now)
            entry = self._seen.get(key)
            if entry is None:
                if len(self._seen) < self.max_keys:
                    self._seen[key] = [now, 0, _first_line(record), record.name, record.levelno]
                passed = True
            else:
                entry[1] += 1
                passed = False
        self._emit(due)
        return passed

    def flush(self, force: bool = False) -> None:
        """Write the summaries whose window has ended (all of them when `force`)."""
        with self._lock:
            due = self._take_due(float("inf") if force else self.clock())
        self._emit(due)

    def _take_due(self, now: float) -> list[logging.LogRecord]:
        due = []
        for key in [k for k, e in self._seen.items() if now - e[0] >= self.window]:
            start, count, text, name, level = self._seen.pop(key)
            if count:
                span = min(now, start + self.window) - start if now != float("inf") else self.window
                rec = logging.LogRecord(name, level, __file__, 0, "repeated %d more times in %.0f s: %s",
                                        (count, span, text), None)
                rec.tidal_summary = True
                due.append(rec)
        return due

    def _emit(self, records: list[logging.LogRecord]) -> None:
        for rec in records:
            self.sink.handle(rec)


def _first_line(record: logging.LogRecord) -> str:
    try:
        text = record.getMessage()
    except Exception:  # a bad format string: the template itself says enough
        text = str(record.msg)
    return text.splitlines()[0][:300] if text else ""


class _Flusher(threading.Thread):
    """Writes due summaries once a window, so a burst that stops still gets its count."""

    def __init__(self, collapser: RepeatCollapser) -> None:
        super().__init__(name="tidal-log-flush", daemon=True)
        self.collapser = collapser
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.collapser.window):
            self.collapser.flush()


_active: tuple[RepeatCollapser, _Flusher | None] | None = None


def setup_logging(path: str | None = None, level: str | int = "INFO", max_bytes: int = 10 * 1024 * 1024,
                  backups: int = 5, *, repeat_window: float = 10.0, stream: TextIO | None = None) -> logging.Handler:
    """Route the root logger to one handler: `path` rotated at `max_bytes` keeping `backups` files, else stderr.

    Replaces handlers an earlier call (or basicConfig) installed. Returns the handler.
    """
    global _active
    if path:
        handler: logging.Handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups,
                                                       encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    collapser = RepeatCollapser(repeat_window, handler)
    handler.addFilter(collapser)
    root = logging.getLogger()
    _teardown()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    flusher = None
    if repeat_window > 0:
        flusher = _Flusher(collapser)
        flusher.start()
    _active = (collapser, flusher)
    atexit.register(collapser.flush, True)
    return handler


def setup_from_env(env: Mapping[str, str], stream: TextIO | None = None, **given) -> logging.Handler:
    """`setup_logging` with LogSettings from `env` (TIDAL_LOG_FILE, ...) and `given` overrides."""
    s = LogSettings.from_env(env, **given)
    return setup_logging(s.file, s.level, s.max_bytes, s.backups, repeat_window=s.repeat_window, stream=stream)


def _teardown() -> None:
    global _active
    if _active is not None:
        atexit.unregister(_active[0].flush)
        if _active[1] is not None:
            _active[1].stopped.set()
    _active = None


def child_output(log: Path | str) -> Path:
    """Where a process Tidal starts writes what it prints outside logging (a crash's traceback, a CLI's error
    line): beside `log`, which the process itself writes and rotates (TIDAL_LOG_FILE). Both are read back."""
    return Path(log).with_suffix(".out")


def child_log_env(log: Path | str) -> dict[str, str]:
    """The environment that makes a started Tidal process log to `log`, rotated by size."""
    return {"TIDAL_LOG_FILE": str(log)}


def last_line(*paths: Path | str, prefix: str = "") -> str:
    """The last non-empty line of the first file that has one (the `.out` before the log: a crash's last word)."""
    for path in paths:
        try:
            with open(path, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 8192))
                lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        except OSError:
            continue
        if lines:
            return lines[-1].removeprefix(prefix)
    return ""
