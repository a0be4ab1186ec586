"""`tidal apply -f`: the reference procedure's pvc.yaml (PV + PVC) and hpa.yaml, and Tidal's own documents."""

from __future__ import annotations

import argparse
import sys

import yaml

from tidal.commands.common import client
from tidal.commands.volume import credentials_from_env
from tidal.errors import UserError

EXAMPLE = """examples (the reference procedure's files):
  tidal apply -f examples/reference-procedure/pvc.yaml     # OSS CSI volume -> oss://bucket (akId/akSecret to the secret store)
  tidal apply -f examples/reference-procedure/hpa.yaml     # the HPA on sls_ingress_qps, target 10 per replica, 1 to 10
"""

OSS_DRIVERS = ("ossplugin.csi.alibabacloud.com",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLE
    parser.add_argument("-f", "--filename", required=True, action="append", help="a YAML file ('-' for stdin)")


def _placeholder(value) -> bool:
    return not value or (isinstance(value, str) and value.strip().startswith("<") and value.strip().endswith(">"))


def pv_to_volume(pv: dict, claim: str, env=None) -> dict:
    """A PersistentVolume as a Tidal volume request (credentials kept apart, for the secret store)."""
    spec = pv.get("spec") or {}
    name = (pv.get("metadata") or {}).get("name", "?")
    csi = spec.get("csi")
    if csi:
        if csi.get("driver") not in OSS_DRIVERS:
            raise UserError(f"PersistentVolume {name}: CSI driver {csi.get('driver')!r} is not supported "
                            f"(supported: {', '.join(OSS_DRIVERS)}, hostPath, nfs)")
        attrs = csi.get("volumeAttributes") or {}
        bucket = attrs.get("bucket")
        if _placeholder(bucket):
            raise UserError(f"PersistentVolume {name}: volumeAttributes.bucket is not set (still {bucket!r})")
        path = str(attrs.get("path") or "").strip("/")
        url = f"oss://{bucket}" + (f"/{path}" if path else "")
        endpoint = attrs.get("url") or ""
        if _placeholder(endpoint):
            endpoint = ""
        if endpoint and "://" not in endpoint:
            endpoint = "https://" + endpoint
        creds = {}
        if not _placeholder(attrs.get("akId")) and not _placeholder(attrs.get("akSecret")):
            creds = {"akId": str(attrs["akId"]), "akSecret": str(attrs["akSecret"])}
        else:
            creds = credentials_from_env(url, env)
        body = {"name": claim, "url": url, "endpoint": endpoint, "options": str(attrs.get("otherOpts") or "")}
        if creds:
            body["credentials"] = creds
        return body
    if spec.get("hostPath"):
        return {"name": claim, "url": "file://" + spec["hostPath"]["path"]}
    if spec.get("local"):
        return {"name": claim, "url": "file://" + spec["local"]["path"]}
    if spec.get("nfs"):
        raise UserError(f"PersistentVolume {name}: mount the NFS export and use hostPath, or `tidal volume create`")
    raise UserError(f"PersistentVolume {name}: needs csi (OSS), hostPath or local")


def bind(docs: list[dict], env=None) -> list[dict]:
    """PVCs bind to PVs like Kubernetes' binder: by spec.volumeName, else the one unclaimed PV in the file."""
    pvs = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "PersistentVolume"}
    claimed: set[str] = set()
    out = []
    for d in docs:
        if d.get("kind") != "PersistentVolumeClaim":
            continue
        claim = d["metadata"]["name"]
        want = (d.get("spec") or {}).get("volumeName")
        if want:
            if want not in pvs:
                raise UserError(f"PersistentVolumeClaim {claim}: volumeName {want!r} is not in the file")
        else:
            free = [n for n in pvs if n not in claimed]
            if len(free) != 1:
                raise UserError(f"PersistentVolumeClaim {claim}: cannot tell which PersistentVolume it binds "
                                f"({len(free)} unclaimed); set spec.volumeName")
            want = free[0]
        claimed.add(want)
        out.append(pv_to_volume(pvs[want], claim, env))
    return out


def yaml_error(path: str, exc: yaml.YAMLError) -> str:
    """`FILE:LINE:COLUMN: not valid YAML: what is wrong` (1-based, where the parser found it)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
    return f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")


def load_documents(paths: list[str]) -> list[dict]:
    docs = []
    for path in paths:
        try:
            text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
            loaded = [d for d in yaml.safe_load_all(text) if d]
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise UserError(yaml_error(path, exc)) from None
        if not loaded:
            raise UserError(f"{path}: no documents (empty, or only comments): nothing applied")
        for d in loaded:
            if not isinstance(d, dict) or "kind" not in d:
                raise UserError(f"{path}: every document needs a kind")
            if d["kind"] in ("PersistentVolume", "PersistentVolumeClaim") and not (d.get("metadata") or {}).get("name"):
                raise UserError(f"{path}: {d['kind']} without metadata.name")
        docs += loaded
    return docs


def run(args) -> int:
    docs = load_documents(args.filename)
    api = client()
    known = {"PersistentVolume", "PersistentVolumeClaim", "HorizontalPodAutoscaler", "NodePool", "Service", "Volume"}
    for d in docs:
        if d["kind"] not in known:
            raise UserError(f"kind {d['kind']!r} is not supported (supported: {', '.join(sorted(known))})")
    for body in bind(docs):
        v = api.post("/volumes", body)
        print(f"volume/{v['name']} configured: {v['url']}" + (" (credentials in the secret store)" if v["secret"] else ""))
    for d in docs:
        kind = d["kind"]
        if kind == "HorizontalPodAutoscaler":
            out = api.post("/autoscalers", {"document": d})
            print(f"horizontalpodautoscaler/{out['hpa'] or out['service']} configured for service {out['service']}"
                  + (f"; {out['note']}" if out.get("note") else ""))
        elif kind == "NodePool":
            p = api.post("/nodepools", d.get("spec") or {})
            print(f"nodepool/{p['name']} created")
        elif kind == "Service":
            s = api.post("/services", d.get("spec") or {})
            print(f"service/{s['name']} created")
            # The same notes and warnings `tidal serve` prints (a runtime it will use, a model path not there).
            if s.get("runtime_note"):
                print(s["runtime_note"])
            for warning in s.get("warnings") or ():
                print(warning, file=sys.stderr)
        elif kind == "Volume":
            v = api.post("/volumes", d.get("spec") or {})
            print(f"volume/{v['name']} configured")
    return 0
