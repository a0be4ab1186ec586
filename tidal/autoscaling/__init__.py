"""Autoscaling: the HPA spec and parser, the Kubernetes HPA decision, and Tidal's burst mode."""

from tidal.autoscaling.hpa import HPAState, Recommendation, decide
from tidal.autoscaling.metrics import Metrics, PodInfo, PodMetric
from tidal.autoscaling.spec import HPASpec, parse_hpa, qps_service

__all__ = ["HPASpec", "HPAState", "Metrics", "PodInfo", "PodMetric", "Recommendation", "decide", "parse_hpa",
           "qps_service"]
