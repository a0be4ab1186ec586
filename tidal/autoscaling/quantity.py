"""Kubernetes quantities ("10", "500m", "1.5k", "2Gi", "1e3") as exact decimals, and their milli-values."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$")
_SUFFIX = {
    None: Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}


def parse_quantity(value: Any) -> Decimal:
    """A Kubernetes quantity as an exact Decimal; numbers from YAML are taken as written."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise ValueError(f"quantity must be a number or a string like '500m', got {value!r}")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"quantity must be finite, got {value!r}")
        # repr gives the shortest decimal that round-trips, i.e. what the user wrote
        return Decimal(repr(value))
    if not isinstance(value, str):
        raise ValueError(f"quantity must be a number or a string like '500m', got {type(value).__name__}")
    text = value.strip()
    m = _QUANTITY.match(text)
    if m is None:
        raise ValueError(f"quantities must match the regular expression "
                         f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', got {value!r}")
    number, exponent, suffix = m.groups()
    try:
        d = Decimal(number)
        if exponent:
            d = d.scaleb(int(exponent[1:]))
    except InvalidOperation as e:  # pragma: no cover - the regex admits only valid decimals
        raise ValueError(f"invalid quantity {value!r}") from e
    return d * _SUFFIX[suffix]


def milli_value(q: Decimal) -> int:
    """resource.Quantity.MilliValue(): the value in thousandths, rounded up."""
    return math.ceil(q * 1000)


def milli_of(value: float) -> int:
    """A metric sample (a float from the gateway or a metrics source) in thousandths, as a quantity would hold it."""
    return milli_value(parse_quantity(value if isinstance(value, int) else float(value)))


Quantity = Annotated[Decimal, BeforeValidator(parse_quantity), PlainSerializer(lambda d: str(d), return_type=str)]
