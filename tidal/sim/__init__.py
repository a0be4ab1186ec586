"""The simulator: capacity policies against spot-availability traces, and Tidal's fuller model with requests."""
