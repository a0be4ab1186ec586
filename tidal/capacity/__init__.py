"""Capacity: how many spot and on-demand nodes to hold, and where (pure policies, shared by the control plane and the simulator)."""
