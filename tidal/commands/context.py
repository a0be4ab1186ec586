"""`tidal context`: add, use, list and remove the places Tidal's commands act on (this machine or a cluster)."""

from __future__ import annotations

import argparse
import os

from tidal.commands.common import add_output, emit, table
from tidal.errors import UserError

EXAMPLE = """examples:
  tidal context add prod --kubernetes --kubeconfig ~/.kube/config --context prod-admin --namespace serving
  tidal context use prod        # later commands act on the cluster
  tidal --context prod serve list   # one command on a context (TIDAL_CONTEXT=NAME does the same)
  tidal context use local       # back to this machine (the default)
  tidal context list
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLE
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(parser))
    add = sub.add_parser("add", help="add (or replace) a context")
    add.add_argument("name", help="the context's name (lower case, digits and -; `local` is built in)")
    add.add_argument("--kubernetes", action="store_true", required=True, help="a Kubernetes cluster")
    add.add_argument("--kubeconfig", default="", help="kubeconfig file (default: KUBECONFIG, else ~/.kube/config); "
                                                      "Tidal keeps its path, never its contents")
    add.add_argument("--context", dest="kube_context", default="",
                     help="context in the kubeconfig (default: its current-context)")
    add.add_argument("--namespace", "-n", required=True, help="namespace of the services' objects")
    add.add_argument("--image", default="", help="image that runs `tidal model-server` in the cluster")
    from tidal.backends.kubernetes.presets import DEFAULT_PRESET, PROVIDERS
    add.add_argument("--provider", default=DEFAULT_PRESET, choices=PROVIDERS,
                     help="how the cluster's nodes say spot or on-demand (default: %(default)s; custom: "
                          "the label below)")
    add.add_argument("--capacity-label", default="", metavar="KEY",
                     help="custom provider: the node label that says spot or on-demand")
    add.add_argument("--spot-value", default="", metavar="V", help="custom provider: its value on spot nodes")
    add.add_argument("--on-demand-value", default="", metavar="V",
                     help="custom provider: its value on on-demand nodes (default: on-demand nodes lack the "
                          "spot value)")
    add.add_argument("--spot-taint", default="", metavar="KEY=VALUE:EFFECT",
                     help="custom provider: the taint spot nodes carry (spot pods tolerate it)")
    add.add_argument("--no-check", action="store_true", help="do not contact the cluster now")
    use = sub.add_parser("use", help="make a context the current one")
    use.add_argument("name", help="a context from `tidal context list`, or local")
    ls = sub.add_parser("list", help="list contexts (* marks the current one)")
    add_output(ls)
    rm = sub.add_parser("remove", help="remove a context")
    rm.add_argument("name", help="the context to forget (its kubeconfig is left as it is)")


def run(args) -> int:
    from tidal.backends.kubernetes.contexts import CONTEXT_ENV, Context, ContextKind, ContextStore
    store = ContextStore.from_env()
    if args.action == "add":
        from pydantic import ValidationError
        kubeconfig = os.path.abspath(os.path.expanduser(args.kubeconfig)) if args.kubeconfig else ""
        if kubeconfig and not os.path.isfile(kubeconfig):
            raise UserError(f"kubeconfig {args.kubeconfig} does not exist")
        try:
            context = Context(name=args.name, kind=ContextKind.KUBERNETES, kubeconfig=kubeconfig,
                              kube_context=args.kube_context, namespace=args.namespace, image=args.image,
                              provider=args.provider, capacity_label=args.capacity_label,
                              spot_value=args.spot_value, on_demand_value=args.on_demand_value,
                              spot_taint=args.spot_taint)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"]))
            msg = first["msg"].removeprefix("Value error, ")
            raise UserError(f"invalid context {where}: {msg}" if where else f"invalid context: {msg}") from None
        note = ""
        if not args.no_check:
            from tidal.backends.kubernetes.client import check_access
            note = f" (Kubernetes {check_access(context)}, namespace {context.namespace})"
        store.add(context)
        print(f"context/{context.name} added{note}")
        return 0
    if args.action == "use":
        context = store.use(args.name)
        print(f"current context: {context.name}")
        if not getattr(args, "tidal_context", "") and os.environ.get(CONTEXT_ENV, "").strip() not in ("", context.name):
            print(f"note: {CONTEXT_ENV}={os.environ[CONTEXT_ENV]} overrides it in this shell")
        return 0
    if args.action == "remove":
        store.remove(args.name)
        print(f"context/{args.name} removed")
        return 0
    current = store.current_name()
    contexts = store.list()
    rows = [{"name": c.name, "current": c.name == current, "kind": str(c.kind), "kubeconfig": c.kubeconfig,
             "context": c.kube_context, "namespace": c.namespace, "image": c.image,
             "provider": c.provider if c.is_kubernetes else "",
             **({"capacity_label": c.capacity_label, "spot_value": c.spot_value,
                 "on_demand_value": c.on_demand_value, "spot_taint": c.spot_taint} if c.capacity_label else {})}
            for c in contexts]
    if emit(rows, args.output):
        return 0
    table(["CURRENT", "NAME", "KIND", "NAMESPACE", "KUBECONFIG", "CONTEXT"],
          [["*" if r["current"] else "", r["name"], r["kind"], r["namespace"], r["kubeconfig"], r["context"]]
           for r in rows])
    return 0
