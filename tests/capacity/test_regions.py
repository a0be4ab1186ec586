"""A node pool lives in one provider and region: the catalog keyed by region, placing a pool at create, refusing a
mix in one line, and pools stored before pools had a region (a real SQLite store) placed once."""

import json

import pytest

from tidal.capacity.catalog import NOTICE_SECONDS, guess_place, load_catalog, migrate_pools, placed_pool
from tidal.capacity.nodepool import PoolNode, observe, plan_decisions, pool_zones
from tidal.capacity.policies.types import Plan
from tidal.control.store import Store
from tidal.errors import InvalidArgument
from tidal.spec import NodePoolSpec

CAT = load_catalog()


def spec(**kw) -> NodePoolSpec:
    return NodePoolSpec.model_validate({"name": "p", "spot": True, **kw})


PLACES = [
    # (id, pool fields, (provider, region), notice)
    ("default: the catalog's first entry, the reference procedure's ACK pool", {}, ("alibaba", "cn-hangzhou"), 300),
    ("a region names its provider", {"region": "us-east-1"}, ("aws", "us-east-1"), 120),
    ("a provider alone: its first region", {"provider": "gcp"}, ("gcp", "us-central1"), 30),
    ("the instance types name the region", {"instance_types": "g4dn.xlarge,g5.xlarge"}, ("aws", "us-east-1"), 120),
    ("the zones name the region", {"zones": "cn-hangzhou-h"}, ("alibaba", "cn-hangzhou"), 300),
    ("a notice given stays", {"region": "us-east-1", "notice_seconds": 60}, ("aws", "us-east-1"), 60),
]


@pytest.mark.parametrize("fields,place,notice", [c[1:] for c in PLACES], ids=[c[0] for c in PLACES])
def test_a_pool_is_placed_in_one_region(fields, place, notice):
    placed = placed_pool(spec(**fields), CAT)
    assert (placed.provider, placed.region) == place and placed.notice_seconds == notice
    view = CAT.for_pool(placed)
    assert {t.place for t in view.types.values()} == {place}
    # Every offering the pool can launch is in its region: no AWS on-demand beside Alibaba spot.
    assert {CAT.get(o.instance_type).place for o in view.offerings(placed.instance_types, placed.zones, "on-demand")} \
        == {place}


REFUSED = [
    ("types of two clouds", {"instance_types": "g4dn.xlarge,ecs.gn6i-c4g1.xlarge"},
     "instance type ecs.gn6i-c4g1.xlarge is in alibaba cn-hangzhou, not aws us-east-1: a node pool lives in one "
     "provider and region"),
    ("a type outside the region asked for", {"region": "cn-hangzhou", "instance_types": "g4dn.xlarge"},
     "instance type g4dn.xlarge is in aws us-east-1, not alibaba cn-hangzhou"),
    ("a provider and region that do not go together", {"provider": "aws", "region": "cn-hangzhou"},
     "no region 'aws cn-hangzhou' in the catalog"),
    ("a zone of another region", {"region": "us-east-1", "zones": "cn-hangzhou-h"}, "zone 'cn-hangzhou-h' offers none"),
    ("an unknown type", {"instance_types": "nope"}, "unknown instance type 'nope'"),
]


@pytest.mark.parametrize("fields,words", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_mixing_is_refused_in_one_line(fields, words):
    with pytest.raises(InvalidArgument) as err:
        placed_pool(spec(**fields), CAT)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_provider_notice_leads():
    assert NOTICE_SECONDS == {"aws": 120.0, "gcp": 30.0, "alibaba": 300.0}


@pytest.mark.parametrize("zones,place", [
    (["us-east-1a", "us-east-1f"], ("aws", "us-east-1")), (["us-central1-a"], ("gcp", "us-central1")),
    (["cn-hangzhou-h", "cn-hangzhou-j"], ("alibaba", "cn-hangzhou")), (["us-east-1a", "us-west-2a"], None),
    (["zone-0"], None)])
def test_zone_names_say_their_region(zones, place):
    assert guess_place(zones) == place


def test_an_older_catalog_file_keeps_loading_its_types_find_their_region(tmp_path):
    user = tmp_path / "catalog.json"
    user.write_text(json.dumps({"instance_types": [
        {"name": "g4dn.xlarge", "vcpu": 4, "memory_gib": 16, "gpus": 1, "on_demand_price": 0.6,
         "spot_prices": {"us-east-1a": 0.2}},
        {"name": "mine.gpu", "vcpu": 4, "memory_gib": 16, "gpus": 1, "on_demand_price": 0.5,
         "spot_prices": {"eu-west-1a": 0.1}}],
        "regions": [{"provider": "onprem", "region": "lab", "instance_types": [
            {"name": "lab.gpu", "vcpu": 8, "memory_gib": 32, "gpus": 1, "on_demand_price": 0.0,
             "spot_prices": {"lab-a": 0.0}}]}]}))
    cat = load_catalog(user)
    assert cat.types["g4dn.xlarge"].place == ("aws", "us-east-1") and cat.types["g4dn.xlarge"].on_demand_price == 0.6
    assert cat.types["mine.gpu"].place == ("aws", "eu-west-1")
    assert placed_pool(spec(region="lab"), cat).provider == "onprem"


def test_the_policy_may_spread_over_type_zone_pairs():
    pool = placed_pool(spec(instance_types="g4dn.xlarge,g5.xlarge", zones="us-east-1a,us-east-1b"), CAT)
    keys = pool_zones(pool, CAT, by_type=True)
    assert sorted(keys) == ["g4dn.xlarge@us-east-1a", "g4dn.xlarge@us-east-1b", "g5.xlarge@us-east-1a",
                            "g5.xlarge@us-east-1b"]
    assert pool_zones(pool, CAT) == ["us-east-1a", "us-east-1b"]
    nodes = [PoolNode("a", "us-east-1a", "g5.xlarge", "spot", "ready", 0.0),
             PoolNode("b", "us-east-1a", "g4dn.xlarge", "spot", "notified", 0.0)]
    obs = observe(pool, CAT, nodes, 2, keys, None, {"g4dn.xlarge@us-east-1a": 1}, {}, 120.0, 1000.0)
    by = {z.name: z for z in obs.zones}
    assert by["g5.xlarge@us-east-1a"].held == 1 and by["g4dn.xlarge@us-east-1a"].noticed == 1
    assert by["g4dn.xlarge@us-east-1a"].preempted == 1 and by["g5.xlarge@us-east-1a"].price == 0.402
    plan = Plan(0, tuple(1 if k in ("g5.xlarge@us-east-1a", "g4dn.xlarge@us-east-1b") else 0 for k in keys))
    launches = plan_decisions(pool, plan, keys, nodes, CAT, 1000.0)
    assert [(d.instance_type, d.zone) for d in launches] == [("g4dn.xlarge", "us-east-1b")]
    # A refused (type, zone) is not retried while it is cached unavailable.
    assert plan_decisions(pool, plan, keys, nodes, CAT, 1000.0,
                          unavailable=frozenset({("g4dn.xlarge", "us-east-1b", "spot")})) == []


def test_pools_stored_before_regions_are_placed_once(tmp_path):
    store = Store(tmp_path / "state.db")
    old = [NodePoolSpec(name="plain", spot=True), NodePoolSpec(name="aws", instance_types=["g4dn.xlarge"]),
           NodePoolSpec(name="mixed", instance_types=["g4dn.xlarge", "ecs.c6.large"])]
    for p in old:
        store.create_pool(p, 0.0)
    assert migrate_pools(store, CAT) == ["aws", "plain"]
    got = {p.name: p for p in store.list_pools()}
    assert (got["plain"].provider, got["plain"].region, got["plain"].notice_seconds) == ("alibaba", "cn-hangzhou", 120)
    assert (got["aws"].provider, got["aws"].region) == ("aws", "us-east-1")
    assert got["mixed"].region == "" and CAT.for_pool(got["mixed"]).types.keys() >= {"g4dn.xlarge"}
    assert migrate_pools(store, CAT) == []  # once


def test_create_sends_provider_region_and_types_only_when_given():
    import argparse

    from tidal.commands import nodepool
    parser = argparse.ArgumentParser()
    nodepool.add_arguments(parser)
    body = nodepool._spec(parser.parse_args(["create", "p", "--spot", "--region", "us-east-1", "--instance-types",
                                             "g4dn.xlarge,g5.xlarge"]))
    assert body["region"] == "us-east-1" and body["instance_types"] == "g4dn.xlarge,g5.xlarge"
    assert "provider" not in body and "notice_seconds" not in body  # the provider's own notice, at the server
    body = nodepool._spec(parser.parse_args(["create", "p", "--spot", "--notice", "45"]))
    assert body["notice_seconds"] == 45 and "region" not in body


def test_the_control_plane_launches_only_in_the_pool_region():
    from tidal.capacity.executor import Ledger, pool_commands
    from tidal.capacity.nodepool import Launch
    for fields, place in (({}, ("alibaba", "cn-hangzhou")), ({"region": "us-east-1"}, ("aws", "us-east-1"))):
        pool = placed_pool(spec(on_demand_percentage=50, **fields), CAT)
        zones = pool_zones(pool, CAT)
        planned = pool_commands(pool, Plan(2, (1,) + (0,) * (len(zones) - 1)), zones, [], CAT, 0.0, None, Ledger(), 45)
        launched = [c for c in planned.commands if isinstance(c, Launch)]
        assert len(launched) == 3 and {CAT.get(c.instance_type).place for c in launched} == {place}


def test_the_ledger_counts_by_zone_and_by_type_zone_pool():
    from tidal.capacity.executor import Ledger
    from tidal.capacity.nodepool import Launch
    ledger = Ledger().preemption("z", 2, "t1").refusal(Launch("p", "z", "t2", "spot"), 5.0).preemption("y")
    assert dict(ledger.preempted) == {"z": 2, "y": 1} and dict(ledger.launch_failed) == {"z": 1}
    assert ledger.counts() == ({"z": 2, "y": 1, "t1@z": 2}, {"z": 1, "t2@z": 1})
    assert Ledger.from_dict(ledger.to_dict()) == ledger
    assert ledger.decided().counts() == ({}, {})


def test_a_live_notice_reaches_the_policy_by_type_and_zone():
    from tidal.control.commands import Preempted
    from tidal.control.decide.capacity import feed
    fed = feed({}, [], [Preempted("p", "us-east-1a", "g5.xlarge"), Preempted("p", "us-east-1b")])
    assert fed["p"].ledger.counts()[0] == {"us-east-1a": 1, "us-east-1b": 1, "g5.xlarge@us-east-1a": 1}


TWO_REGIONS = {"regions": [
    {"provider": "aws", "region": "us-west-2", "instance_types": [
        {"name": "g4dn.xlarge", "vcpu": 4, "memory_gib": 16, "gpus": 1, "on_demand_price": 0.526,
         "spot_prices": {"us-west-2a": 0.19, "us-west-2b": 0.21}}]},
    {"provider": "alibaba", "region": "cn-shanghai", "instance_types": [
        {"name": "ecs.gn6i-c4g1.xlarge", "vcpu": 4, "memory_gib": 15, "gpus": 1, "on_demand_price": 1.9,
         "spot_prices": {"cn-shanghai-e": 0.5, "cn-shanghai-f": 0.55}}]}]}


def test_a_type_name_listed_in_two_regions_is_two_types_each_pool_finds_its_own(tmp_path):
    # g4dn.xlarge is sold in us-east-1 (shipped) and us-west-2 (this file), ecs.gn6i-c4g1.xlarge in cn-hangzhou and
    # cn-shanghai: types are keyed by (provider, region, name), so each region keeps its own zones and prices.
    user = tmp_path / "catalog.json"
    user.write_text(json.dumps(TWO_REGIONS))
    cat = load_catalog(user)
    assert cat.places_of("g4dn.xlarge") == [("aws", "us-east-1"), ("aws", "us-west-2")]
    assert cat.places_of("ecs.gn6i-c4g1.xlarge") == [("alibaba", "cn-hangzhou"), ("alibaba", "cn-shanghai")]
    for fields, place, zones, on_demand in (
            ({"region": "us-west-2", "instance_types": "g4dn.xlarge"}, ("aws", "us-west-2"),
             {"us-west-2a", "us-west-2b"}, 0.526),
            ({"instance_types": "g4dn.xlarge", "zones": "us-west-2a"}, ("aws", "us-west-2"), {"us-west-2a"}, 0.526),
            ({"instance_types": "g4dn.xlarge"}, ("aws", "us-east-1"), None, CAT.get("g4dn.xlarge").on_demand_price),
            ({"region": "cn-shanghai", "instance_types": "ecs.gn6i-c4g1.xlarge"}, ("alibaba", "cn-shanghai"),
             {"cn-shanghai-e", "cn-shanghai-f"}, 1.9),
            ({"region": "cn-hangzhou", "instance_types": "ecs.gn6i-c4g1.xlarge"}, ("alibaba", "cn-hangzhou"),
             set(CAT.get("ecs.gn6i-c4g1.xlarge").zones), CAT.get("ecs.gn6i-c4g1.xlarge").on_demand_price)):
        pool = placed_pool(spec(**fields), cat)
        assert (pool.provider, pool.region) == place, fields
        view = cat.for_pool(pool)
        assert view.get(pool.instance_types[0]).place == place and view.get(pool.instance_types[0]).on_demand_price \
            == on_demand
        offers = view.offerings(pool.instance_types, pool.zones, "spot")
        assert offers and (zones is None or {o.zone for o in offers} == zones)
        # What the control plane launches for the pool is in its region, at its region's price.
        zone_keys = pool_zones(pool, cat)
        launches = plan_decisions(pool, Plan(1, (1,) + (0,) * (len(zone_keys) - 1)), zone_keys, [], cat, 0.0)
        assert launches and all(view.get(d.instance_type).place == place for d in launches)
        assert {d.zone for d in launches if d.capacity_type == "spot"} <= set(view.get(pool.instance_types[0]).zones)
    # A node's type is found in the region its zone belongs to (what its cost is counted at).
    assert cat.lookup("g4dn.xlarge", "us-west-2b").spot_prices["us-west-2b"] == 0.21
    assert cat.lookup("g4dn.xlarge", "us-east-1a").place == ("aws", "us-east-1")
    assert cat.lookup("g4dn.xlarge").place == ("aws", "us-east-1") and cat.lookup("nope") is None
    from tidal.capacity.cost import NodeLife, node_cost
    west = node_cost(NodeLife("n1", "g4dn.xlarge", "us-west-2b", "spot", 0.0, 3600.0), cat, 3600.0)
    assert (west.cost, west.on_demand_cost) == (0.21, 0.526)
    # Mixing is still refused in one line, naming both regions of the name.
    with pytest.raises(InvalidArgument) as err:
        placed_pool(spec(region="cn-shanghai", instance_types="g4dn.xlarge"), cat)
    assert str(err.value) == ("instance type g4dn.xlarge is in aws us-east-1 and aws us-west-2, not alibaba "
                              "cn-shanghai: a node pool lives in one provider and region")


def test_a_pool_stored_before_regions_with_a_name_in_two_regions_is_placed_by_its_zones(tmp_path):
    user = tmp_path / "catalog.json"
    user.write_text(json.dumps(TWO_REGIONS))
    cat = load_catalog(user)
    store = Store(tmp_path / "state.db")
    store.create_pool(NodePoolSpec(name="west", instance_types=["g4dn.xlarge"], zones=["us-west-2a"]), 0.0)
    store.create_pool(NodePoolSpec(name="east", instance_types=["g4dn.xlarge"]), 0.0)
    assert migrate_pools(store, cat) == ["east", "west"]
    got = {p.name: p for p in store.list_pools()}
    assert (got["west"].region, got["east"].region) == ("us-west-2", "us-east-1")


def test_a_flat_catalog_file_overrides_a_name_in_the_region_its_zones_say(tmp_path):
    # The older flat form has no region: a type of a name already listed in two regions overrides the listing
    # its zone names say, and leaves the other alone.
    user = tmp_path / "catalog.json"
    user.write_text(json.dumps({**TWO_REGIONS, "instance_types": [
        {"name": "g4dn.xlarge", "vcpu": 4, "memory_gib": 16, "gpus": 1, "on_demand_price": 0.5,
         "spot_prices": {"us-west-2a": 0.15}}]}))
    cat = load_catalog(user)
    west = cat.in_region("aws", "us-west-2").get("g4dn.xlarge")
    assert west.on_demand_price == 0.5 and west.zones == ["us-west-2a"]
    assert cat.in_region("aws", "us-east-1").get("g4dn.xlarge") == CAT.get("g4dn.xlarge")
