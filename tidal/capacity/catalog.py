"""The instance catalog: types with vCPU, memory, GPUs, zones and on-demand/spot prices, and the offerings a pool may launch."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tidal.errors import InvalidArgument

CapacityType = Literal["spot", "on-demand"]


class InstanceType(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    name: str = Field(min_length=1)
    vcpu: float = Field(gt=0)
    memory_gib: float = Field(gt=0)
    gpus: int = Field(default=0, ge=0)
    gpu_model: str = ""
    on_demand_price: float = Field(ge=0)  # USD per hour
    spot_prices: dict[str, float] = Field(default_factory=dict)  # zone -> USD per hour

    @property
    def zones(self) -> list[str]:
        return sorted(self.spot_prices)

    def price(self, zone: str, capacity_type: CapacityType) -> float:
        if capacity_type == "on-demand":
            return self.on_demand_price
        return self.spot_prices.get(zone, self.on_demand_price)


@dataclass(frozen=True)
class Offering:
    """One way to get a node: a type in a zone, billed spot or on-demand."""
    instance_type: str
    zone: str
    capacity_type: CapacityType
    price: float
    price_per_vcpu: float


class Catalog:
    def __init__(self, types: Iterable[InstanceType]) -> None:
        self.types: dict[str, InstanceType] = {t.name: t for t in types}

    def get(self, name: str) -> InstanceType:
        try:
            return self.types[name]
        except KeyError:
            raise InvalidArgument(f"unknown instance type {name!r} (known: {', '.join(sorted(self.types))})") from None

    def validate_pool(self, instance_types: list[str], zones: list[str]) -> None:
        for name in instance_types:
            self.get(name)
        known = {z for name in (instance_types or self.types) for z in self.get(name).zones}
        for zone in zones:
            if zone not in known:
                raise InvalidArgument(f"zone {zone!r} offers none of the pool's instance types (zones: {', '.join(sorted(known))})")

    def offerings(self, instance_types: list[str], zones: list[str], capacity_type: CapacityType,
                  order: str = "cost-optimized") -> list[Offering]:
        """Offerings of the pool, in the order the multi-zone policy tries them.

        cost-optimized: ascending vCPU unit price (ESS's COST_OPTIMIZED); priority: the
        order the types were listed in, then zone order; balance: by zone, then price.
        """
        names = instance_types or sorted(self.types)
        out: list[Offering] = []
        for rank, name in enumerate(names):
            t = self.get(name)
            for zone in t.zones:
                if zones and zone not in zones:
                    continue
                price = t.price(zone, capacity_type)
                out.append(Offering(name, zone, capacity_type, price, price / t.vcpu))
        if order == "cost-optimized":
            out.sort(key=lambda o: (o.price_per_vcpu, o.instance_type, o.zone))
        elif order == "priority":
            out.sort(key=lambda o: (names.index(o.instance_type), o.zone))
        else:
            out.sort(key=lambda o: (o.zone, o.price_per_vcpu))
        return out


def _parse(data: object, source: str) -> list[InstanceType]:
    if not isinstance(data, dict) or not isinstance(data.get("instance_types"), list):
        raise InvalidArgument(f"{source}: expected an object with a list 'instance_types'")
    try:
        return [InstanceType.model_validate(item) for item in data["instance_types"]]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidArgument(f"{source}: instance_types.{where}: {first['msg']}") from None


def default_catalog_data() -> dict:
    return json.loads(resources.files("tidal.capacity").joinpath("catalog.json").read_text())


def load_catalog(user_file: str | Path | None = None) -> Catalog:
    """The shipped catalog, with a user file's types added or overriding by name."""
    types = {t.name: t for t in _parse(default_catalog_data(), "default catalog")}
    if user_file is not None and Path(user_file).exists():
        try:
            data = json.loads(Path(user_file).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"cannot read catalog {user_file}: {exc}") from None
        for t in _parse(data, str(user_file)):
            types[t.name] = t
    return Catalog(types.values())
