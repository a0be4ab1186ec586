"""The load generator behind `tidal bench`: open-loop profiles, closed-loop concurrency, HDR latency."""
