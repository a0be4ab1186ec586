"""Reading a replica metric from real Prometheus endpoints on 127.0.0.1: gauges as read, counters as rates."""

import asyncio

from tidal.autoscaling.scrape import Scraper
from tidal.http.server import HttpServer, Response


def test_scraper_reads_gauges_and_turns_counters_into_rates():
    async def main():
        count = {"n": 100}

        def handler(req):
            body = (f"# TYPE tidal_requests_total counter\ntidal_requests_total{{code=\"200\"}} {count['n']}\n"
                    f"# TYPE depth gauge\ndepth 3\n")
            return Response(200, body.encode(), b"text/plain")

        server = HttpServer(handler, "127.0.0.1", 0)
        await server.start()
        clock = {"t": 50.0}
        scraper = Scraper(monotonic=lambda: clock["t"])
        endpoints = {"r1": f"127.0.0.1:{server.port}", "gone": "127.0.0.1:1"}
        wanted = {"tidal_requests_total": {"code": "200"}, "depth": {}}
        try:
            first = await scraper.scrape(endpoints, wanted)
            count["n"], clock["t"] = 130, 60.0  # 30 more requests in 10 s
            second = await scraper.scrape(endpoints, wanted)
        finally:
            scraper.close()
            await server.stop(1.0)
        return first, second

    first, second = asyncio.run(main())
    # A counter needs two readings; the gone replica is missing, never zero.
    assert first == {"tidal_requests_total": {}, "depth": {"r1": 3.0}}
    assert second == {"tidal_requests_total": {"r1": 3.0}, "depth": {"r1": 3.0}}
