"""Autoscaling: the HPA spec and parser, the Kubernetes HPA decision, and Tidal's burst mode."""
