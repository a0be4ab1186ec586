"""Autoscaling: the HPA spec and its file reader, the Kubernetes HPA decision, and Tidal's burst mode."""

from tidal.autoscaling.hpa import HPAState, Recommendation, decide
from tidal.autoscaling.metrics import Metrics, PodInfo, PodMetric
from tidal.autoscaling.spec import HPASpec, qps_service
from tidal.autoscaling.hpafile import parse_hpa

__all__ = ["HPASpec", "HPAState", "Metrics", "PodInfo", "PodMetric", "Recommendation", "decide", "parse_hpa",
           "qps_service"]
