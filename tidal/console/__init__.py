"""The web console: a built static page and the JSON API it polls, mounted by the control plane."""


def mount(cp):
    """The console for a running control plane (see tidal.console.control.mount)."""
    from tidal.console.control import mount as _mount
    return _mount(cp)
