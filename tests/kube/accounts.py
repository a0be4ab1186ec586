"""A client that acts as a ServiceAccount (a token from the TokenRequest API), to test what its RBAC allows."""

from __future__ import annotations


def service_account_client(kube_cluster, namespace: str, name: str, create: bool = True):
    """An ApiClient authenticated as ServiceAccount `namespace/name` (created first when `create`)."""
    from kubernetes import client
    core = client.CoreV1Api(kube_cluster.api)
    if create:
        core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    token = core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    configuration = client.Configuration()
    configuration.host = kube_cluster.server
    configuration.ssl_ca_cert = str(kube_cluster.work_dir / "pki" / "apiserver.crt")
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(configuration)
