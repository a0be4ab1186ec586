"""Reading a metric from the replicas' Prometheus endpoints for a Pods metric (the HPA's custom metrics API, here).

The control plane scrapes each ready replica's `/metrics` when an HPA names a metric
the gateway does not measure. A gauge is taken as it reads; a cumulative sample (a
counter, or a histogram's `_sum`/`_count`) becomes its rate per second since the
previous scrape of that replica, so the first scrape of a replica reports nothing
(the HPA's rules for a missing pod apply). Samples whose labels match the metric's
selector are summed. A replica that does not answer within the timeout is missing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Mapping

from prometheus_client.parser import text_string_to_metric_families

from tidal.http.client import HttpClient

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
_CUMULATIVE = frozenset({"counter", "histogram", "summary", "gaugehistogram"})


def read(text: str, wanted: Mapping[str, Mapping[str, str]]) -> dict[str, tuple[float, bool]]:
    """name -> (the matching samples' sum, whether it is cumulative), for the wanted names present in `text`."""
    out: dict[str, tuple[float, bool]] = {}
    for family in text_string_to_metric_families(text):
        cumulative = family.type in _CUMULATIVE
        for sample in family.samples:
            # A counter's family is named without `_total`; users name the sample they see.
            labels = wanted.get(sample.name)
            if labels is None or sample.name.endswith("_created"):
                continue
            if any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            total, _ = out.get(sample.name, (0.0, cumulative))
            out[sample.name] = (total + float(sample.value), cumulative)
    return out


class Scraper:
    """Keeps the previous cumulative reading per (replica, metric) to turn counters into rates."""

    def __init__(self, timeout_seconds: float = 0.5, monotonic: Callable[[], float] = time.monotonic) -> None:
        # Rates are per real second (the replicas count real requests), whatever the control plane's clock.
        self._monotonic = monotonic
        self._timeout = timeout_seconds
        self._client = HttpClient(connect_timeout=timeout_seconds, max_idle_per_host=1)
        self._last: dict[tuple[str, str], tuple[float, float]] = {}

    async def scrape(self, endpoints: Mapping[str, str],
                     wanted: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, float]]:
        """`endpoints`: replica id -> "host:port". Returns metric -> replica id -> value."""
        ids = list(endpoints)
        texts = await asyncio.gather(*(self._fetch(endpoints[rid]) for rid in ids))
        now = self._monotonic()
        out: dict[str, dict[str, float]] = {name: {} for name in wanted}
        for rid, text in zip(ids, texts):
            if text is None:
                continue
            try:
                found = read(text, wanted)
            except ValueError as exc:  # not Prometheus text: this replica's metric is missing
                log.warning("replica %s: unreadable metrics (%s)", rid, exc)
                continue
            for name, (value, cumulative) in found.items():
                if not cumulative:
                    out[name][rid] = value
                    continue
                before = self._last.get((rid, name))
                self._last[(rid, name)] = (value, now)
                if before is not None and now > before[1] and value >= before[0]:
                    out[name][rid] = (value - before[0]) / (now - before[1])
        live = set(ids)
        for key in [k for k in self._last if k[0] not in live]:
            del self._last[key]
        return out

    async def _fetch(self, endpoint: str) -> str | None:
        host, _, port = endpoint.rpartition(":")
        try:
            resp = await asyncio.wait_for(self._client.request("GET", host, int(port), METRICS_PATH),
                                          self._timeout)
        except Exception as exc:  # a slow, refusing or gone replica: its metric is missing this sync
            log.debug("scraping %s failed: %s", endpoint, exc)
            return None
        return resp.body.decode("utf-8", "replace") if resp.status == 200 else None

    def close(self) -> None:
        self._client.close()
