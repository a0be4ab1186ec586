"""The control plane: desired and observed state, the API, and the reconcile loops that drive a backend."""
