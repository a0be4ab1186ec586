"""`tidal volume`: named model stores (the reference procedure's PV/PVC step); credentials to a 0600 secret store."""

from __future__ import annotations

import argparse
import os

from tidal.commands.common import add_output, client, emit, table
from tidal.errors import UserError

EXAMPLE = """examples:
  tidal volume create model-pvc --url file:///srv/models
  OSS_ACCESS_KEY_ID=... OSS_ACCESS_KEY_SECRET=... \\
    tidal volume create model-pvc --url oss://my-bucket --endpoint https://oss-cn-hangzhou.aliyuncs.com --credentials-from-env
  tidal volume list
"""

# Where credentials come from in the environment, per URL scheme (the names the model server reads too).
ENV_KEYS = {"oss": (("OSS_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_ID"), ("OSS_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_ACCESS_KEY_SECRET")),
            "s3": (("AWS_ACCESS_KEY_ID",), ("AWS_SECRET_ACCESS_KEY",))}


def credentials_from_env(url: str, env=None) -> dict[str, str]:
    env = os.environ if env is None else env
    keys = ENV_KEYS.get(url.split("://", 1)[0])
    if keys is None:
        return {}
    key_id = next((env[k] for k in keys[0] if env.get(k)), "")
    secret = next((env[k] for k in keys[1] if env.get(k)), "")
    return {"akId": key_id, "akSecret": secret} if key_id and secret else {}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLE
    sub = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    sub.required = True
    p = sub.add_parser("create", help="create or replace a volume", epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="the volume's name (what --data VOLUME:PATH names)")
    p.add_argument("--url", required=True,
                   help="file:// (an existing folder), s3://, oss://, gs:// URL of the model store; "
                        "http(s):// where the operator allows it")
    p.add_argument("--endpoint", default="", help="object-store endpoint")
    p.add_argument("--credentials-from-env", action="store_true",
                   help="read the access key from OSS_ACCESS_KEY_ID/SECRET or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    add_output(p)
    p = sub.add_parser("list", help="list volumes")
    add_output(p)
    p = sub.add_parser("delete", help="delete a volume no service uses")
    p.add_argument("name", help="the volume")


def run(args) -> int:
    api = client()
    if args.action == "create":
        url = args.url
        if "://" not in url and url.startswith(("/", "./", "../")):
            url = "file://" + os.path.abspath(url)  # a folder on this machine
        body = {"name": args.name, "url": url, "endpoint": args.endpoint}
        if args.credentials_from_env:
            creds = credentials_from_env(url)
            if not creds:
                raise UserError(f"--credentials-from-env: no access key in the environment for {url.split('://')[0]}://")
            body["credentials"] = creds
        v = api.post("/volumes", body)
        if not emit(v, args.output):
            print(f"volume {v['name']} -> {v['url']}" + (" (credentials in the secret store)" if v["secret"] else ""))
        return 0
    if args.action == "list":
        vols = api.get("/volumes")
        if not emit(vols, args.output):
            table(["NAME", "URL", "ENDPOINT", "CREDENTIALS"],
                  [[v["name"], v["url"], v["endpoint"], "secret store" if v["secret"] else "-"] for v in vols])
        return 0
    if args.action == "delete":
        api.delete(f"/volumes/{args.name}")
        print(f"volume {args.name} deleted")
        return 0
    raise UserError(f"unknown action {args.action!r}")
