"""The model server's Prometheus metrics: a lean registry that renders the text exposition format.

Why not prometheus_client: observing a labelled counter and histogram there
costs about 3 us per request (label lookup, a lock per child, one call per
bucket boundary); this keeps one plain object per (model, version, api) and
does the cumulative arithmetic only when scraped, at well under 1 us
(benchmarks/server/metrics_overhead.py measures both). Everything here is
touched only on the event loop thread, so nothing takes a lock.
"""

from __future__ import annotations

from bisect import bisect_left

from tidal.errors import HTTP_STATUS

# Seconds; fine at the low end where the model server lives (tens of microseconds).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                   0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
QUEUE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                 0.05, 0.1, 0.25, 1.0)

# HTTP status -> TF Serving's status name, for its request_count series.
_STATUS_NAME = {200: "OK"}
for _code, _status in HTTP_STATUS.items():
    _STATUS_NAME.setdefault(_status, _code.value)


class _Hist:
    __slots__ = ("buckets", "sum")

    def __init__(self, n: int) -> None:
        self.buckets = [0] * (n + 1)
        self.sum = 0.0


class _RequestSeries(_Hist):
    __slots__ = ("codes", "ok_count", "ok_sum")

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.codes: dict[int, int] = {}
        self.ok_count = 0
        self.ok_sum = 0.0


class ModelStats:
    """What /v2/models/{m}/stats reports for one model version."""

    __slots__ = ("success_count", "success_seconds", "fail_count", "fail_seconds",
                 "batches", "batched_rows", "queue_seconds")

    def __init__(self) -> None:
        self.success_count = 0
        self.success_seconds = 0.0
        self.fail_count = 0
        self.fail_seconds = 0.0
        self.batches = 0
        self.batched_rows = 0
        self.queue_seconds = 0.0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _num(x: float) -> str:
    return repr(float(x))


class ServerMetrics:
    """Request counts and latency per model, version and API; batch sizes and queue time."""

    def __init__(self, latency_buckets=LATENCY_BUCKETS, batch_buckets=BATCH_SIZE_BUCKETS,
                 queue_buckets=QUEUE_BUCKETS) -> None:
        self._lat_bounds = tuple(float(b) for b in latency_buckets)
        self._batch_bounds = tuple(float(b) for b in batch_buckets)
        self._queue_bounds = tuple(float(b) for b in queue_buckets)
        self._requests: dict[tuple[str, str, str], _RequestSeries] = {}
        self._batch_sizes: dict[tuple[str, str], _Hist] = {}
        self._queue: dict[tuple[str, str], _Hist] = {}

    # -- hot path
    def observe_request(self, model: str, version: str, api: str, status: int, seconds: float) -> None:
        key = (model, version, api)
        s = self._requests.get(key)
        if s is None:
            s = self._requests[key] = _RequestSeries(len(self._lat_bounds))
        s.buckets[bisect_left(self._lat_bounds, seconds)] += 1
        s.sum += seconds
        codes = s.codes
        codes[status] = codes.get(status, 0) + 1
        if status < 400:
            s.ok_count += 1
            s.ok_sum += seconds

    def observe_batch(self, model: str, version, batch_size: int, queue_seconds: float) -> None:
        """The batcher's on_batch callback (it calls it from the event loop, like everything here)."""
        key = (model, version)  # the version as the batcher gives it; rendered with str()
        h = self._batch_sizes.get(key)
        if h is None:
            h = self._batch_sizes[key] = _Hist(len(self._batch_bounds))
            self._queue[key] = _Hist(len(self._queue_bounds))
        h.buckets[bisect_left(self._batch_bounds, batch_size)] += 1
        h.sum += batch_size
        q = self._queue[key]
        q.buckets[bisect_left(self._queue_bounds, queue_seconds)] += 1
        q.sum += queue_seconds

    # -- readers
    def stats(self, model: str, version: str) -> ModelStats:
        out = ModelStats()
        for (m, v, _api), s in list(self._requests.items()):
            if m == model and v == version:
                total = sum(s.buckets)
                out.success_count += s.ok_count
                out.success_seconds += s.ok_sum
                out.fail_count += total - s.ok_count
                out.fail_seconds += s.sum - s.ok_sum
        for (m, v), h in list(self._batch_sizes.items()):
            if m == model and str(v) == version:
                out.batches += sum(h.buckets)
                out.batched_rows += int(h.sum)
                out.queue_seconds += self._queue[(m, v)].sum
        return out

    def render(self) -> bytes:
        """The Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        requests = list(self._requests.items())

        lines.append("# HELP tidal_requests_total Requests answered, by model, version, API and HTTP status.")
        lines.append("# TYPE tidal_requests_total counter")
        for (m, v, api), s in requests:
            base = f'model="{_escape(m)}",version="{_escape(v)}",api="{api}"'
            for code, n in sorted(s.codes.items()):
                lines.append(f'tidal_requests_total{{{base},code="{code}"}} {n}')

        lines.append("# HELP tidal_request_latency_seconds Time from a parsed request to its answer.")
        lines.append("# TYPE tidal_request_latency_seconds histogram")
        for (m, v, api), s in requests:
            base = f'model="{_escape(m)}",version="{_escape(v)}",api="{api}"'
            self._histogram(lines, "tidal_request_latency_seconds", base, self._lat_bounds, s)

        batches = [((m, str(v)), h, self._queue[(m, v)]) for (m, v), h in list(self._batch_sizes.items())]
        lines.append("# HELP tidal_batch_size Rows per batch the runtime ran.")
        lines.append("# TYPE tidal_batch_size histogram")
        for (m, v), h, _q in batches:
            self._histogram(lines, "tidal_batch_size", f'model="{_escape(m)}",version="{_escape(v)}"',
                            self._batch_bounds, h)
        lines.append("# HELP tidal_batch_queue_seconds Time a request waited for its batch to start.")
        lines.append("# TYPE tidal_batch_queue_seconds histogram")
        for (m, v), _h, q in batches:
            self._histogram(lines, "tidal_batch_queue_seconds", f'model="{_escape(m)}",version="{_escape(v)}"',
                            self._queue_bounds, q)

        # TF Serving's own series, summed from the above, so its dashboards keep working.
        by_status: dict[tuple[str, str], int] = {}
        for (m, _v, _api), s in requests:
            if not m:
                continue
            for code, n in s.codes.items():
                key = (m, _STATUS_NAME.get(code, "UNKNOWN"))
                by_status[key] = by_status.get(key, 0) + n
        lines.append("# HELP :tensorflow:serving:request_count The total number of requests.")
        lines.append("# TYPE :tensorflow:serving:request_count counter")
        for (m, status), n in sorted(by_status.items()):
            lines.append(f':tensorflow:serving:request_count{{model_name="{_escape(m)}",status="{status}"}} {n}')
        lines.append("")
        return "\n".join(lines).encode()

    @staticmethod
    def _histogram(lines: list[str], name: str, labels: str, bounds: tuple, h: _Hist) -> None:
        running = 0
        for bound, n in zip(bounds, h.buckets):
            running += n
            lines.append(f'{name}_bucket{{{labels},le="{_num(bound)}"}} {running}')
        running += h.buckets[-1]
        lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {running}')
        lines.append(f"{name}_sum{{{labels}}} {repr(float(h.sum))}")
        lines.append(f"{name}_count{{{labels}}} {running}")
