"""The web console: a built static page and the JSON API it polls, mounted by the control plane."""
