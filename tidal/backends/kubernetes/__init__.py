"""Tidal on a Kubernetes cluster: arena-shaped objects (render), contexts that point at a cluster, and the backend."""
