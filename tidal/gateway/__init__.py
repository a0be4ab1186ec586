"""The gateway: one port for every service, least-outstanding balancing, retries, drain, request metrics."""

from tidal.gateway.config import GatewaySettings, ReplicaEndpoint, RoutesFile, ServiceConfig
from tidal.gateway.proxy import Gateway, ReplicaStats, ServiceStats

__all__ = ["Gateway", "GatewaySettings", "ReplicaEndpoint", "ReplicaStats", "RoutesFile", "ServiceConfig",
           "ServiceStats"]
