"""The instance catalog, keyed by provider and region: types with vCPU, memory, GPUs, zones and prices, and the
offerings a pool (which lives in one region) may launch."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tidal.errors import InvalidArgument

CapacityType = Literal["spot", "on-demand"]

# How long before a reclaim each provider says so (AWS's two-minute warning, GCP's 30 s preemption notice,
# Alibaba's about five minutes before release): the default lead of a pool's notices and of the fuller model's.
NOTICE_SECONDS = {"aws": 120.0, "gcp": 30.0, "alibaba": 300.0}


class InstanceType(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    name: str = Field(min_length=1)
    vcpu: float = Field(gt=0)
    memory_gib: float = Field(gt=0)
    gpus: int = Field(default=0, ge=0)
    gpu_model: str = ""
    on_demand_price: float = Field(ge=0)  # USD per hour
    spot_prices: dict[str, float] = Field(default_factory=dict)  # zone -> USD per hour
    provider: str = ""   # the region group it was listed in ("" in a catalog built without regions)
    region: str = ""

    @property
    def zones(self) -> list[str]:
        return sorted(self.spot_prices)

    @property
    def place(self) -> tuple[str, str]:
        return self.provider, self.region

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


def place_text(place: tuple[str, str]) -> str:
    return " ".join(p for p in place if p) or "the catalog"


class Catalog:
    """Instance types keyed by (provider, region, name), grouped by (provider, region) in the order the catalog
    lists them: the first region is a new pool's default. One name may be listed in several regions (the same
    machine, priced per region); within a region a name is one type. `types` and `get` answer by name: in a
    region's view (`in_region`, `for_pool`) that is the region's type, in the whole catalog the first listing
    (`lookup` finds the one a zone belongs to)."""

    def __init__(self, types: Iterable[InstanceType]) -> None:
        self.entries: dict[tuple[str, str, str], InstanceType] = {}
        for t in types:
            self.entries[(t.provider, t.region, t.name)] = t
        self.types: dict[str, InstanceType] = {}
        for t in self.entries.values():
            self.types.setdefault(t.name, t)
        self._views: dict[tuple[str, str], Catalog] = {}
        # A catalog does not change once built: the views and orders the decisions ask for each tick are kept.
        self._pools: dict[tuple, Catalog] = {}
        self._offerings: dict[tuple, list[Offering]] = {}

    @cached_property
    def places(self) -> list[tuple[str, str]]:
        seen: dict[tuple[str, str], None] = {}
        for t in self.entries.values():
            seen.setdefault(t.place)
        return list(seen)

    def places_of(self, name: str) -> list[tuple[str, str]]:
        """The regions that list a type name, in catalog order."""
        return [t.place for t in self.entries.values() if t.name == name]

    def get(self, name: str) -> InstanceType:
        try:
            return self.types[name]
        except KeyError:
            raise InvalidArgument(f"unknown instance type {name!r} (known: {', '.join(sorted(self.types))})") from None

    def lookup(self, name: str, zone: str = "") -> InstanceType | None:
        """The listing of `name` that offers `zone` (a node's type in its own region), else its first; None when
        the catalog does not list the name."""
        first = self.types.get(name)
        if first is None or not zone or zone in first.spot_prices:
            return first
        return next((t for t in self.entries.values() if t.name == name and zone in t.spot_prices), first)

    def in_region(self, provider: str, region: str) -> "Catalog":
        """The types of one provider and region (a cached view)."""
        key = (provider, region)
        if key not in self._views:
            self._views[key] = self if self.places == [key] else \
                Catalog(t for t in self.entries.values() if t.place == key)
        return self._views[key]

    def for_pool(self, pool) -> "Catalog":
        """The types a pool may launch: those of its provider and region (a pool stored before pools had a region
        gets the one its types or zones name, else the catalog's first)."""
        key = (pool.provider, pool.region, tuple(pool.instance_types), tuple(pool.zones))
        if key not in self._pools:
            self._pools[key] = self._for_pool(pool)
        return self._pools[key]

    def _for_pool(self, pool) -> "Catalog":
        try:
            return self.in_region(*self.place_of(pool.provider, pool.region, pool.instance_types, pool.zones))
        except InvalidArgument:
            # A record from before pools had one region may name types of several (or one no longer listed): it
            # keeps working in the region of its first known type rather than stopping the control loop.
            known = [p for n in pool.instance_types for p in self.places_of(n)]
            return self.in_region(*(known[0] if known else self.places[0]))

    def place_of(self, provider: str, region: str, instance_types: list[str], zones: list[str]) -> tuple[str, str]:
        """The (provider, region) a pool with these choices lives in, or one clear line saying why it cannot be
        (one pool never mixes providers or regions)."""
        if len(self.places) == 1 and not provider and not region:
            place = self.places[0]
        elif region or provider:
            matches = [p for p in self.places if (not provider or p[0] == provider) and (not region or p[1] == region)]
            if not matches:
                known = ", ".join(place_text(p) for p in self.places)
                raise InvalidArgument(f"no region {place_text((provider, region))!r} in the catalog (known: {known})")
            if len(matches) > 1 and not region:
                # A provider alone: its first region that offers the types (and zones) asked for, else its first.
                matches = [p for p in matches if self._offers(p, instance_types, zones)] or matches
            place = matches[0]
        else:
            # The first region that lists every type named and offers every zone named (a type name may be
            # listed in several regions: the zones then say which).
            for name in instance_types:
                self.get(name)
            fit = [p for p in self.places if self._offers(p, instance_types, zones)]
            named = [p for p in self.places_of(instance_types[0]) if self._offers(p, instance_types, [])] \
                if instance_types else []
            place = fit[0] if fit else named[0] if named else \
                self.places_of(instance_types[0])[0] if instance_types else self.places[0]
        for name in instance_types:
            if (place[0], place[1], name) not in self.entries:
                self.get(name)
                where = " and ".join(place_text(p) for p in self.places_of(name))
                raise InvalidArgument(f"instance type {name} is in {where}, not {place_text(place)}: a node pool "
                                      f"lives in one provider and region")
        return place

    def _offers(self, place: tuple[str, str], instance_types: list[str], zones: list[str]) -> bool:
        """Whether a region lists every one of these types and offers every one of these zones (of its types)."""
        if any((place[0], place[1], n) not in self.entries for n in instance_types):
            return False
        here = [t for t in self.entries.values()
                if t.place == place and (not instance_types or t.name in instance_types)]
        return all(any(z in t.spot_prices for t in here) for z in zones)

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
        key = (tuple(instance_types), tuple(zones), capacity_type, order)
        if key not in self._offerings:
            self._offerings[key] = self._ordered(instance_types, zones, capacity_type, order)
        return list(self._offerings[key])

    def _ordered(self, instance_types: list[str], zones: list[str], capacity_type: CapacityType,
                 order: str) -> list[Offering]:
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


def placed_pool(spec, catalog: Catalog):
    """A pool spec with its provider and region filled in (at create, and for a record stored without them), after
    checking its types and zones belong there. Raises InvalidArgument with one line."""
    provider, region = catalog.place_of(spec.provider, spec.region, spec.instance_types, spec.zones)
    view = catalog.in_region(provider, region)
    view.validate_pool(spec.instance_types, spec.zones)
    if not view.offerings(spec.instance_types, spec.zones, "on-demand"):
        raise InvalidArgument("the pool's instance types and zones leave no offering to launch")
    update = {"provider": provider, "region": region}
    if "notice_seconds" not in spec.model_fields_set and provider in NOTICE_SECONDS:
        update["notice_seconds"] = NOTICE_SECONDS[provider]  # the provider's own lead unless the pool says
    from tidal.capacity.policies import POLICIES  # here: the policies import this module's types
    if spec.policy in POLICIES and POLICIES[spec.policy].acts_on_notice:
        update["spot_remedy"] = True  # the policy replaces the node at the notice: its replicas move then too
    if all(getattr(spec, k) == v for k, v in update.items()):
        return spec
    return spec.model_copy(update=update)


# Zone names as providers write them: AWS us-east-1a, GCP us-central1-a, Alibaba cn-hangzhou-h.
_ZONE_RULES = ((re.compile(r"^([a-z]{2}(?:-gov)?-[a-z]+-\d+)[a-z]$"), "aws"),
               (re.compile(r"^([a-z]+-[a-z]+\d+)-[a-z]$"), "gcp"),
               (re.compile(r"^((?:cn|ap|eu|us|me)-[a-z]+)-[a-z]$"), "alibaba"))


def guess_place(zones: Iterable[str]) -> tuple[str, str] | None:
    """The provider and region zone names say, when they all say the same one (for types listed without)."""
    found = set()
    for zone in zones:
        for rule, provider in _ZONE_RULES:
            m = rule.match(zone)
            if m:
                found.add((provider, m.group(1)))
                break
        else:
            return None
    return found.pop() if len(found) == 1 else None


def _types(items: object, source: str, where: str) -> list[InstanceType]:
    if not isinstance(items, list):
        raise InvalidArgument(f"{source}: expected a list '{where}instance_types'")
    try:
        return [InstanceType.model_validate(item) for item in items]
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise InvalidArgument(f"{source}: {where}instance_types.{loc}: {first['msg']}") from None


def _parse(data: object, source: str, known: dict[str, list[tuple[str, str]]]) -> list[InstanceType]:
    """Types of a catalog file: `regions` (each {provider, region, instance_types}) and/or a flat
    `instance_types` list (the older form), whose types take their place from their own `provider`/`region`, the
    region their zone names say, the first region already listing that name, or else the first region known. `known`:
    the places already listing each name, first first."""
    if not isinstance(data, dict) or not ("regions" in data or "instance_types" in data):
        raise InvalidArgument(f"{source}: expected an object with a list 'regions' (or 'instance_types')")
    out: list[InstanceType] = []
    regions = data.get("regions", [])
    if not isinstance(regions, list):
        raise InvalidArgument(f"{source}: 'regions' must be a list")
    for i, group in enumerate(regions):
        if not isinstance(group, dict) or not group.get("provider") or not group.get("region"):
            raise InvalidArgument(f"{source}: regions.{i}: expected provider, region and instance_types")
        place = {"provider": str(group["provider"]), "region": str(group["region"])}
        out += [t.model_copy(update=place) for t in _types(group.get("instance_types"), source, f"regions.{i}.")]
    if "instance_types" in data:
        first = next(iter(known.values()))[0] if known else out[0].place if out else ("", "")
        for t in _types(data["instance_types"], source, ""):
            if not (t.provider and t.region):
                listed = known.get(t.name)
                place = guess_place(t.zones) or (listed[0] if listed else first)
                t = t.model_copy(update={"provider": place[0], "region": place[1]})
            out.append(t)
    return out


def default_catalog_data() -> dict:
    return json.loads(resources.files("tidal.capacity").joinpath("catalog.json").read_text())


def load_catalog(user_file: str | Path | None = None) -> Catalog:
    """The shipped catalog, with a user file's regions and types added (a type overrides the one of its name in
    its region; one name may be listed in several regions)."""
    types = {(t.provider, t.region, t.name): t for t in _parse(default_catalog_data(), "default catalog", {})}
    if user_file is not None and Path(user_file).exists():
        try:
            data = json.loads(Path(user_file).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"cannot read catalog {user_file}: {exc}") from None
        known: dict[str, list[tuple[str, str]]] = {}
        for t in types.values():
            known.setdefault(t.name, []).append(t.place)
        for t in _parse(data, str(user_file), known):
            types[(t.provider, t.region, t.name)] = t
    return Catalog(types.values())


def migrate_pools(store, catalog: Catalog) -> list[str]:
    """Pools stored before a pool had a provider and region get the one their types or zones name (else the
    catalog's first), written back once; a record that cannot be placed (types of several regions) is left as it
    was and keeps running in its first type's region. Returns the pools written."""
    done = []
    for spec in store.list_pools():
        if spec.provider and spec.region:
            continue
        try:
            placed = placed_pool(spec.model_copy(update={"notice_seconds": spec.notice_seconds}), catalog)
        except InvalidArgument:
            continue
        store.update_pool(placed)
        done.append(spec.name)
    return done
