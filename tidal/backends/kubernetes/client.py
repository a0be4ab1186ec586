"""The official Kubernetes client, made from a context, and the API's failures as one clear line each."""

from __future__ import annotations

import json
from typing import Any

from tidal.backends.kubernetes.contexts import Context
from tidal.errors import UserError

FIELD_MANAGER = "tidal"
TIMEOUT_S = 10  # one API call; a cluster that does not answer in this long is reported, not waited for


def api_client(context: Context):
    """An ApiClient for the context's kubeconfig and kube context (the kubeconfig is read, never copied)."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException
    if not context.kubeconfig and in_cluster():
        return _in_cluster_client(context)
    try:
        return config.new_client_from_config(config_file=context.kubeconfig or None,
                                             context=context.kube_context or None)
    except ConfigException as exc:
        where = context.kubeconfig or "the default kubeconfig"
        raise UserError(f"context {context.name}: {where} does not work: {str(exc).splitlines()[0]}") from None
    except OSError as exc:
        raise UserError(f"context {context.name}: cannot read {context.kubeconfig}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - e.g. a file that is not YAML: one line, never a traceback
        where = context.kubeconfig or "the default kubeconfig"
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        what = getattr(exc, "problem", None) or type(exc).__name__
        raise UserError(f"context {context.name}: {where} does not work: not a kubeconfig: {what}{at}") from None


def in_cluster() -> bool:
    """Running in a pod with no kubeconfig of its own: the pod's service account is the credential (as kubectl)."""
    import os
    from pathlib import Path
    return (bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not os.environ.get("KUBECONFIG")
            and not (Path.home() / ".kube" / "config").exists())


def _in_cluster_client(context: Context):
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except ConfigException as exc:
        raise UserError(f"context {context.name}: the pod's service account does not work: "
                        f"{str(exc).splitlines()[0]}") from None
    return client.ApiClient(configuration)


def api_message(exc: Exception) -> str:
    """An ApiException's reason in one line (the Status object's message when there is one)."""
    body = getattr(exc, "body", None)
    if body:
        try:
            status = json.loads(body)
            if isinstance(status, dict) and status.get("message"):
                return str(status["message"]).splitlines()[0]
        except (ValueError, TypeError):
            pass
    reason = getattr(exc, "reason", None) or str(exc)
    return str(reason).splitlines()[0]


def describe_failure(exc: Exception, what: str) -> str:
    """Why `what` failed, as one line: no rights, not found, or the cluster not reachable."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError
    if isinstance(exc, ApiException):
        if exc.status == 401:
            return f"{what}: the cluster refused the credentials (401): the kubeconfig's token or certificate"
        if exc.status == 403:
            return f"{what}: no rights ({api_message(exc)})"
        if exc.status == 404:
            return f"{what}: not found ({api_message(exc)})"
        return f"{what}: {exc.status} {api_message(exc)}"
    if isinstance(exc, (HTTPError, OSError)):
        return f"{what}: the cluster cannot be reached ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    return f"{what}: {type(exc).__name__}: {exc}"


def check_access(context: Context, api: Any | None = None) -> str:
    """That the cluster answers and the namespace exists and may be read; returns the server's version."""
    from kubernetes import client
    own = api is None
    api = api or api_client(context)
    try:
        try:
            version = client.VersionApi(api).get_code(_request_timeout=TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line
            raise UserError(describe_failure(exc, f"context {context.name}")) from None
        try:
            client.CoreV1Api(api).list_namespaced_pod(context.namespace, limit=1, _request_timeout=TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001
            raise UserError(describe_failure(exc, f"context {context.name}: namespace {context.namespace}")) from None
        try:  # listing Pods of a namespace that does not exist succeeds (empty): ask for the namespace itself
            client.CoreV1Api(api).read_namespace(context.namespace, _request_timeout=TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "status", None) == 404:
                raise UserError(f"context {context.name}: namespace {context.namespace} does not exist") from None
            # 403: a namespaced user may not read Namespace objects; its Pods answered, which is what matters
        return version.git_version
    finally:
        if own:
            api.close()
