"""Which failed attempts the gateway may send to another replica."""

import pytest

from tidal.gateway.proxy import eject_seconds, retry_safe


@pytest.mark.parametrize("name, method, path, expected", [
    ("predict", "POST", "/v1/models/m:predict", True),
    ("V2 infer", "POST", "/v2/models/m/versions/1/infer", True),
    ("TF Serving classify", "POST", "/v1/models/m/versions/2:classify", True),
    ("TF Serving regress", "POST", "/v1/models/m/labels/stable:regress", True),
    ("GET (status, metadata)", "GET", "/v1/models/m", True),
    ("non-inference POST (model load) is not repeated", "POST", "/v2/repository/models/m/load", False),
])
def test_retry_safety(name, method, path, expected):
    assert retry_safe(method, path) is expected


@pytest.mark.parametrize("failures, expected", [
    (1, 2.0),    # first failure: the base
    (2, 4.0),    # 2 * 2**1
    (4, 16.0),   # 2 * 2**3
    (6, 64.0),   # 2 * 2**5, the cap
    (50, 64.0),  # stays at the cap
])
def test_ejection_doubles_up_to_a_cap(failures, expected):
    assert eject_seconds(2.0, failures) == expected
