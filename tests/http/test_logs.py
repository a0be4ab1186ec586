"""tidal.logs: repeats collapsed into one line and a count, files rotated by size, one line per refused request."""

import asyncio
import io
import logging
import socket

import pytest

from tidal.errors import UserError
from tidal.http.server import HttpServer, Response
from tidal.logs import LogSettings, RepeatCollapser, _teardown, setup_logging


@pytest.fixture(autouse=True)
def _restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    _teardown()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _collapser(window=10.0):
    out = io.StringIO()
    sink = logging.StreamHandler(out)
    sink.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    clock = _Clock()
    c = RepeatCollapser(window, sink, clock)
    sink.addFilter(c)
    return c, sink, clock, out


def _rec(msg, *args, name="tidal.x", level=logging.INFO):
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


W = logging.WARNING
# (name, [(time, logger, template, args[, level])], flush at, lines written)
CASES = [
    ("a warning: same template, other args: one line, then the count when the window ends",
     [(0, "a", "refused %s", ("c1",), W), (1, "a", "refused %s", ("c2",), W), (2, "a", "refused %s", ("c3",), W)], 10,
     ["WARNING a: refused c1", "WARNING a: repeated 2 more times in 10 s: refused c1"]),
    ("below a warning, other args are other facts: each is written",
     [(0, "a", "model %s available", ("m1",)), (1, "a", "model %s available", ("m2",))], 10,
     ["INFO a: model m1 available", "INFO a: model m2 available"]),
    ("below a warning, the very same line folds",
     [(0, "a", "model %s available", ("m1",)), (1, "a", "model %s available", ("m1",))], 10,
     ["INFO a: model m1 available", "INFO a: repeated 1 more times in 10 s: model m1 available"]),
    ("different templates are separate lines",
     [(0, "a", "one %s", (1,)), (0, "a", "two %s", (2,))], 10, ["INFO a: one 1", "INFO a: two 2"]),
    ("same template from two loggers: separate",
     [(0, "a", "m", ()), (0, "b", "m", ())], 10, ["INFO a: m", "INFO b: m"]),
    ("no repeat: no summary", [(0, "a", "m", ())], 10, ["INFO a: m"]),
    ("after the window (9 + 1 = 10 s) the message is written again, the summary first",
     [(0, "a", "m %d", (1,), W), (9, "a", "m %d", (2,), W), (10, "a", "m %d", (3,), W)], 30,
     ["WARNING a: m 1", "WARNING a: repeated 1 more times in 10 s: m 1", "WARNING a: m 3"]),
    ("window not over at flush: nothing more yet", [(0, "a", "m", ()), (1, "a", "m", ())], 5, ["INFO a: m"]),
]


@pytest.mark.parametrize("name,events,flush_at,lines", CASES, ids=[c[0] for c in CASES])
def test_repeat_collapser(name, events, flush_at, lines):
    c, sink, clock, out = _collapser()
    for t, logger, msg, args, *level in events:
        clock.now = 100.0 + t
        sink.handle(_rec(msg, *args, name=logger, level=level[0] if level else logging.INFO))
    clock.now = 100.0 + flush_at
    c.flush()
    assert out.getvalue().splitlines() == lines


def test_flush_at_exit_writes_every_pending_count():
    c, sink, clock, out = _collapser()
    for _ in range(5):
        sink.handle(_rec("m"))
    c.flush(force=True)
    assert out.getvalue().splitlines() == ["INFO tidal.x: m", "INFO tidal.x: repeated 4 more times in 10 s: m"]


def test_a_repeated_traceback_is_written_once():
    out = io.StringIO()
    setup_logging(None, "INFO", stream=out, repeat_window=60)
    log = logging.getLogger("tidal.test")
    for i in range(500):
        try:
            raise ValueError(f"bad {i}")
        except ValueError:
            log.exception("handler failed for %s", i)
    text = out.getvalue()
    assert text.count("Traceback") == 1 and text.count("handler failed") == 1


def test_files_rotate_by_size(tmp_path):
    path = tmp_path / "tidal.log"
    setup_logging(str(path), "INFO", max_bytes=4096, backups=2, repeat_window=0)
    log = logging.getLogger("tidal.test")
    for i in range(2000):
        log.info("line %d %s", i, "x" * 40)
    logging.getLogger().handlers[0].flush()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["tidal.log", "tidal.log.1", "tidal.log.2"]
    assert all((tmp_path / f).stat().st_size <= 4096 for f in files)
    assert "line 1999" in path.read_text()


def test_settings_from_the_environment():
    s = LogSettings.from_env({"TIDAL_LOG_FILE": "/x.log", "TIDAL_LOG_MAX_BYTES": "2048", "TIDAL_LOG_BACKUPS": "3"},
                             level="warning")
    assert (s.file, s.max_bytes, s.backups, s.level) == ("/x.log", 2048, 3, "warning")
    with pytest.raises(UserError, match="TIDAL_LOG_MAX_BYTES"):
        LogSettings.from_env({"TIDAL_LOG_MAX_BYTES": "lots"})


def test_bad_requests_are_one_line_each_without_traceback_and_collapse():
    out = io.StringIO()
    setup_logging(None, "INFO", stream=out, repeat_window=60)

    async def main():
        srv = HttpServer(lambda req: Response(200, b""))
        await srv.start()

        def send_garbage():
            for i in range(200):
                with socket.create_connection(("127.0.0.1", srv.port)) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\x00: %d\r\n\r\n" % i)
                    s.recv(1000)
        await asyncio.get_running_loop().run_in_executor(None, send_garbage)
        await srv.stop()
    asyncio.run(main())
    logging.getLogger().handlers[0].filters[0].flush(force=True)
    lines = [ln for ln in out.getvalue().splitlines() if "tidal.http.server" in ln]
    assert len(lines) == 2, lines
    assert "refused a request from 127.0.0.1:" in lines[0] and ": 400 malformed HTTP request" in lines[0]
    assert "repeated 199 more times" in lines[1]
    assert "Traceback" not in out.getvalue()
