"""Contexts: stored 0600 in TIDAL_HOME, pointing at a kubeconfig without copying it; `local` is the default."""

from __future__ import annotations

import json
import stat

import pytest

from tidal.backends.kubernetes.contexts import Context, ContextKind, ContextStore
from tidal.cli import main
from tidal.errors import NotFound, UserError

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: very-secret-token}}]
contexts: [{name: prod, context: {cluster: c, user: u}}]
current-context: prod
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TIDAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TIDAL_CONTEXT", raising=False)
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    return tmp_path


def test_local_is_the_default(home):
    store = ContextStore(home / "home", env={})
    assert store.current().name == "local" and store.current().kind is ContextKind.LOCAL
    assert [c.name for c in store.list()] == ["local"]


def test_add_use_list_remove(home, capsys):
    assert main(["context", "add", "prod", "--kubernetes", "--kubeconfig", str(home / "kubeconfig"),
                 "--context", "prod", "--namespace", "serving", "--no-check"]) == 0
    assert "context/prod added" in capsys.readouterr().out
    path = home / "home" / "contexts.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = path.read_text()
    assert "very-secret-token" not in stored  # a pointer to the kubeconfig, not a copy of it
    assert json.loads(stored)["contexts"][0]["kubeconfig"] == str(home / "kubeconfig")
    assert main(["context", "use", "prod"]) == 0
    assert ContextStore.from_env().current() == Context(
        name="prod", kind=ContextKind.KUBERNETES, kubeconfig=str(home / "kubeconfig"), kube_context="prod",
        namespace="serving")
    capsys.readouterr()
    assert main(["context", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["CURRENT", "NAME", "KIND", "NAMESPACE", "KUBECONFIG", "CONTEXT"]
    assert lines[2].split()[:4] == ["*", "prod", "kubernetes", "serving"]
    assert main(["context", "remove", "prod"]) == 0
    assert ContextStore.from_env().current().name == "local"


def test_env_overrides_the_current_context(home, monkeypatch):
    store = ContextStore.from_env()
    store.add(Context(name="a", kind=ContextKind.KUBERNETES, namespace="x"))
    monkeypatch.setenv("TIDAL_CONTEXT", "a")
    assert ContextStore.from_env().current().name == "a"
    monkeypatch.setenv("TIDAL_CONTEXT", "nope")
    with pytest.raises(NotFound, match="context 'nope' not found"):
        ContextStore.from_env().current()


@pytest.mark.parametrize("argv, message", [
    (["context", "add", "x", "--kubernetes", "--kubeconfig", "/does/not/exist", "-n", "a"], "does not exist"),
    (["context", "add", "Bad_Name", "--kubernetes", "-n", "a", "--no-check"], "invalid context name"),
    (["context", "add", "local", "--kubernetes", "-n", "a", "--no-check"], "built in"),
    (["context", "use", "missing"], "not found"),
    (["context", "add", "x", "-n", "a"], "--kubernetes"),
])
def test_bad_input_is_one_line(home, capsys, argv, message):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code
    assert code == 2
    lines = capsys.readouterr().err.splitlines()
    # One line saying what is wrong; a mistake on the command line also gets the command's usage above it.
    assert message in lines[-1]
    assert all(ln.startswith(("usage: tidal context", " ")) for ln in lines[:-1])  # only the usage above it


def test_a_broken_file_is_one_line(home):
    (home / "home").mkdir()
    (home / "home" / "contexts.json").write_text("{not json")
    with pytest.raises(UserError, match="contexts.json cannot be read"):
        ContextStore.from_env().current()
