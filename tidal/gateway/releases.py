"""A service's releases at the gateway: which release takes a request (weight, header, cookie), mirrored copies,
and each release's counts (errors, p90 latency, answer classes) that a rollout's guards read.

A request names a release with the `x-tidal-release` header or the `tidal-release`
cookie (tests, a QA client); any other request goes to a release drawn by weight.
A release with no ready replica passes its share to the others, so a canary that
is still starting costs no request. The counts are kept per answer for the last
`SAMPLE_SECONDS`, exact (a canary's share of the traffic is small, and the guards
read them once a reconcile pass, not per request).
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Mapping

import orjson

from tidal.gateway.balancing import choose
from tidal.gateway.config import ReleaseSplit
from tidal.http.client import ClientError

log = logging.getLogger(__name__)

HEADER = "x-tidal-release"
COOKIE = "tidal-release"
SAMPLE_SECONDS = 300.0
MAX_SAMPLES = 200_000   # per release: at most this many answers kept (the oldest go first)
MAX_CLASSES = 64        # distinct class labels counted per answer (a classifier has a few)
MAX_MIRRORED = 64       # copies in flight per service; beyond it a copy is skipped, never queued


class UnknownRelease(Exception):
    """A request named a release the service does not have."""


@dataclass(frozen=True)
class ReleaseStats:
    """What a release answered over a window: the inputs of a rollout's guards."""
    release: str
    requests: int
    errors: int                 # 5xx answers (a connection that broke counts as one)
    p90: float | None           # seconds
    classes: dict[str, int] = field(default_factory=dict)  # answer class -> rows (classifiers only)

    def to_dict(self) -> dict:
        return asdict(self)


def pinned_release(headers: Mapping[str, str]) -> str | None:
    """The release a request names by header or cookie, else None."""
    name = headers.get(HEADER)
    if name:
        return name.strip()
    cookie = headers.get("cookie")
    if cookie and COOKIE in cookie:
        for part in cookie.split(";"):
            k, _, v = part.strip().partition("=")
            if k == COOKIE and v:
                return v.strip().strip('"')
    return None


def classes_of(body: bytes) -> tuple[str, ...]:
    """The class of each row of a classifier's answer: the arg-max of each row of TF Serving's `predictions`
    (or of a V2 answer's first output), the top label of `:classify` results. () for anything else."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ()
    if not isinstance(doc, dict):
        return ()
    if isinstance(doc.get("predictions"), list):
        return tuple(c for row in doc["predictions"][:MAX_CLASSES] if (c := _argmax(row)) is not None)
    if isinstance(doc.get("results"), list):  # :classify: [[[label, score], ...] per example]
        out = []
        for row in doc["results"][:MAX_CLASSES]:
            pairs = [p for p in row if isinstance(p, list) and len(p) == 2 and isinstance(p[1], (int, float))] \
                if isinstance(row, list) else []
            if pairs:
                out.append(str(max(pairs, key=lambda p: p[1])[0]))
        return tuple(out)
    outputs = doc.get("outputs")
    if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict):  # V2: flat data + shape
        data, shape = outputs[0].get("data"), outputs[0].get("shape")
        if isinstance(data, list) and isinstance(shape, list) and len(shape) == 2 and shape[1]:
            k = int(shape[1])
            return tuple(c for i in range(0, min(len(data), k * MAX_CLASSES), k)
                         if (c := _argmax(data[i:i + k])) is not None)
    return ()


def _argmax(row) -> str | None:
    if isinstance(row, dict):  # named outputs: the label when there is one, else the one list of scores
        labels = [v for v in row.values() if isinstance(v, str)]
        if len(labels) == 1:
            return labels[0]
        lists = [v for v in row.values() if isinstance(v, list)]
        row = lists[0] if len(lists) == 1 else None
    if not isinstance(row, list) or len(row) < 2 or not all(isinstance(x, (int, float)) for x in row):
        return None  # a regression's scalar, or not a score row
    return str(max(range(len(row)), key=row.__getitem__))


class _Counts:
    __slots__ = ("samples",)

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float, bool, tuple[str, ...]]] = deque(maxlen=MAX_SAMPLES)

    def record(self, now: float, seconds: float, error: bool, classes: tuple[str, ...]) -> None:
        s = self.samples
        while s and s[0][0] < now - SAMPLE_SECONDS:
            s.popleft()
        s.append((now, seconds, error, classes))

    def stats(self, release: str, now: float, window: float) -> ReleaseStats:
        since = now - window
        seen = [x for x in self.samples if x[0] >= since]
        latencies = sorted(x[1] for x in seen)
        classes: Counter[str] = Counter()
        for x in seen:
            classes.update(x[3])
        p90 = latencies[min(len(latencies) - 1, int(0.9 * len(latencies)))] if latencies else None
        return ReleaseStats(release, len(seen), sum(1 for x in seen if x[2]), p90, dict(classes))


class Releases:
    """One service's split. Built from a `ReleaseSplit`; `update` keeps the counts of releases that stay."""

    def __init__(self, split: ReleaseSplit, counts: dict[str, _Counts] | None = None) -> None:
        self.split = split
        self._order = sorted(split.weights)  # a fixed order, so a draw maps to the same release every time
        self._counts = {name: (counts or {}).get(name) or _Counts()
                        for name in {*split.weights, *([split.mirror] if split.mirror else [])}}
        self._ready: dict[str, tuple] = {}
        self.mirrored = 0  # copies in flight
        self._tasks: set = set()

    def keep(self, task) -> None:
        """Hold a mirrored copy's task until it ends (the event loop keeps only a weak reference)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def follow(current: "Releases | None", split: ReleaseSplit | None) -> "Releases | None":
        """A service's releases after the control plane sent `split` (None: one release again)."""
        if split is None:
            return None
        return Releases(split) if current is None else current.update(split)

    def update(self, split: ReleaseSplit) -> "Releases":
        # The control plane sends the same split pass after pass: keep this one (and its mirrors in flight).
        return self if split == self.split else Releases(split, self._counts)

    @property
    def stable(self) -> str:
        return self.split.stable

    def refresh(self, ready: Iterable) -> None:
        """The ready replicas of each release (the gateway calls it whenever its ready set changes)."""
        by: dict[str, list] = {}
        for r in ready:
            by.setdefault(r.release_name, []).append(r)
        self._ready = {k: tuple(v) for k, v in by.items()}

    def choose(self, headers: Mapping[str, str], rand: Callable[[], float]) -> tuple[str, bool]:
        """(the release for a request, whether the request named it)."""
        named = pinned_release(headers)
        if named is not None:
            if named not in self._counts:
                raise UnknownRelease(f"no release {named!r} (releases: {', '.join(self._order)})")
            return named, True
        x = rand() * 100
        acc = 0
        for name in self._order:
            w = self.split.weights[name]
            acc += w
            if w and x < acc:
                return name, False
        return max(self._order, key=lambda n: self.split.weights[n]), False

    def ready(self, release: str) -> tuple:
        return self._ready.get(release, ())

    def mirror(self, rand: Callable[[], float]) -> str | None:
        """The release that gets a copy of this request, or None."""
        s = self.split
        if s.mirror and s.mirror_percent and self.mirrored < MAX_MIRRORED and self._ready.get(s.mirror) \
                and rand() * 100 < s.mirror_percent:
            return s.mirror
        return None

    async def copy(self, release: str, data: bytes, deadline: float, monotonic: Callable[[], float],
                   rand: Callable[[], float]) -> None:
        """Send a copy of a request (its encoded bytes) to `release`: counted for its guards, its answer dropped."""
        cands = self._ready.get(release, ())
        if not cands:
            return
        r = cands[choose([c.outstanding for c in cands], rand)]
        self.mirrored += 1
        r.outstanding += 1
        sent = monotonic()
        status, body = 503, None
        try:
            up = await r.client.request_raw(r.host, r.port, data, deadline)
            status, body = up.status, up.body
        except ClientError as exc:  # the mirrored release's failure, never the client's
            log.debug("mirrored request to %s failed: %s", r.id, exc)
        finally:
            self.mirrored -= 1
            r.release()
        self.record(release, monotonic(), status, monotonic() - sent, body)

    def record(self, release: str, now: float, status: int, seconds: float, body: bytes | None) -> None:
        counts = self._counts.get(release)
        if counts is None:  # a replica of a release the split no longer names (a draining one)
            return
        classes = classes_of(body) if self.split.classes and body and 200 <= status < 300 else ()
        counts.record(now, seconds, status >= 500, classes)

    def stats(self, now: float, window: float) -> list[ReleaseStats]:
        return [self._counts[name].stats(name, now, min(window, SAMPLE_SECONDS)) for name in sorted(self._counts)]
