"""Backends: what runs nodes and replicas for the control plane (local processes; Kubernetes next)."""
