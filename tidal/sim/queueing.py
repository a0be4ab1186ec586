"""Per-request latency of a pool of replicas as an M/M/c queue: the share of requests within an SLO, and the mean.

The gateway balances on outstanding requests, which approximates one shared
queue in front of c = ready replicas x concurrency servers. Service times are
exponential with mean `service_seconds`. An overloaded or empty pool misses
the SLO for every request of the interval (its queue grows without bound).
"""

from __future__ import annotations

import math

import numpy as np


def erlang_c(servers: int, offered: float) -> float:
    """Probability that an arrival waits (Erlang C), offered = lambda / mu < servers; stable recurrence on Erlang B."""
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    rho = offered / servers
    return b / (1 - rho + rho * b)


def within_slo(arrival_rate: float, servers: int, service_seconds: float, slo_seconds: float) -> float:
    """P(response time <= slo) for M/M/c: response = wait (0 w.p. 1-C, else Exp(c mu - lambda)) + Exp(mu)."""
    if arrival_rate <= 0:
        return 1.0
    mu = 1.0 / service_seconds
    if servers <= 0 or arrival_rate >= servers * mu:
        return 0.0
    c_wait = erlang_c(servers, arrival_rate / mu)
    theta = servers * mu - arrival_rate
    tail_service = math.exp(-mu * slo_seconds)
    if abs(theta - mu) < 1e-12:
        tail_both = (1 + mu * slo_seconds) * tail_service
    else:
        tail_both = (theta * tail_service - mu * math.exp(-theta * slo_seconds)) / (theta - mu)
    return 1.0 - ((1 - c_wait) * tail_service + c_wait * tail_both)


def mean_latency(arrival_rate: float, servers: int, service_seconds: float) -> float:
    mu = 1.0 / service_seconds
    if servers <= 0 or arrival_rate >= servers * mu:
        return math.inf
    if arrival_rate <= 0:
        return service_seconds
    return service_seconds + erlang_c(servers, arrival_rate / mu) / (servers * mu - arrival_rate)


def within_slo_many(rates: np.ndarray, servers: np.ndarray, service_seconds: float, slo_seconds: float) -> np.ndarray:
    return np.array([within_slo(float(r), int(c), service_seconds, slo_seconds) for r, c in zip(rates, servers)])
