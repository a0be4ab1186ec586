"""The control plane's commands (`tidal serve`, `nodepool`, `volume`, `apply`, `autoscale`, `top`, `events`, `logs`, `up`, `down`)."""
