"""Which failed attempts the gateway may send to another replica."""

import pytest

from tidal.gateway.proxy import retry_safe


@pytest.mark.parametrize("name, method, path, started, expected", [
    ("predict before any answer", "POST", "/v1/models/m:predict", False, True),
    ("V2 infer before any answer", "POST", "/v2/models/m/versions/1/infer", False, True),
    ("GET before any answer", "GET", "/v1/models/m", False, True),
    ("predict after the answer began", "POST", "/v1/models/m:predict", True, False),
    ("non-inference POST (model load) is not repeated", "POST", "/v2/repository/models/m/load", False, False),
])
def test_retry_safety(name, method, path, started, expected):
    assert retry_safe(method, path, started) is expected
