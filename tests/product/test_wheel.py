"""The built wheel stands on its own: installed into a fresh virtualenv outside the repository, `tidal demo --quick`
runs to its summary, the console's page is served from the package, and the published traces load by name.

Dependencies install from a folder of wheels kept under ~/.cache/tidal-test/wheels (filled by `pip download` the
first time, or whenever the wheel asks for something the folder lacks), so later runs need no network.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
WHEELS = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tidal-test" / "wheels"
# What a source tree holds that a build must not see: environments, earlier builds, caches.
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                    ".hypothesis", "node_modules", "site", ".cache")


def _run(argv: list, timeout: float, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kw)


def _check(done: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert done.returncode == 0, \
        f"{what} failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _install(venv_python: Path, wheel: Path) -> str:
    """Install the wheel and its dependencies from the wheel folder, downloading what the folder lacks."""
    install = [sys.executable, "-m", "pip", "--python", venv_python, "install", "-q", "--no-compile", "--no-index",
               "--find-links", WHEELS, wheel]
    if WHEELS.is_dir() and _run(install, 600).returncode == 0:
        return "from the wheel cache"
    WHEELS.mkdir(parents=True, exist_ok=True)
    _check(_run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", WHEELS, wheel], 900),
           "downloading the dependencies' wheels")
    for ours in WHEELS.glob("tidal-*.whl"):  # only dependencies live there; the wheel under test is built fresh
        ours.unlink()
    _check(_run(install, 600), "installing the wheel")
    return "after filling the wheel cache"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A virtualenv outside the repository with the freshly built wheel installed; yields (venv, env, timings)."""
    tmp = tmp_path_factory.mktemp("wheel")
    timings: dict[str, float] = {}
    started = time.monotonic()
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=NOT_SOURCE)  # a clean tree: no build/ left over from an earlier build
    _check(_run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp / "dist", src], 600),
           "pip wheel")
    (wheel,) = (tmp / "dist").glob("tidal-*.whl")
    timings["build"] = time.monotonic() - started
    started = time.monotonic()
    venv = tmp / "venv"
    _check(_run([sys.executable, "-m", "venv", "--without-pip", venv], 120), "python -m venv")
    how = _install(venv / "bin" / "python", wheel)
    timings[f"install ({how})"] = time.monotonic() - started
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "TIDAL_API", "TIDAL_TOKEN", "TIDAL_HOME")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", TIDAL_HOME=str(tmp / "tidal-home"))
    elsewhere = tmp / "elsewhere"  # the working directory: nothing of the repository in reach
    elsewhere.mkdir()
    yield {"venv": venv, "wheel": wheel, "env": env, "cwd": elsewhere, "tmp": tmp, "timings": timings}
    print("\nwheel test timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))


def test_the_wheel_holds_the_package_data(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    for name in ("tidal/console/static/index.html", "tidal/console/static/app.js", "tidal/console/static/app.css",
                 "tidal/samples/hpa.yaml", "tidal/samples/sentiment/model.onnx",
                 "tidal/samples/sentiment_tf/saved_model.pb", "tidal/samples/sentiment_tf/variables/variables.index",
                 "tidal/sim/data/spot/README.md", "tidal/sim/data/spot/aws1/us-east-1f_v100_1.json",
                 "tidal/sim/data/spot/aws2/us-west-2c_v100_1.json", "tidal/capacity/catalog.json"):
        assert name in names, name
    assert not [n for n in names if n.startswith("tidal/console/web/")]  # the console's sources stay out


def test_installed_commands_answer_from_the_venv(installed):
    venv, env, cwd = installed["venv"], installed["env"], installed["cwd"]
    where = _check(_run([venv / "bin" / "python", "-c", "import tidal; print(tidal.__file__)"], 60, env=env, cwd=cwd),
                   "import tidal").stdout.strip()
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(REPO)
    flag = _check(_run([venv / "bin" / "tidal", "--version"], 60, env=env, cwd=cwd), "tidal --version").stdout
    assert flag.strip() == f"tidal {VERSION}"
    doc = json.loads(_check(_run([venv / "bin" / "tidal", "version", "-o", "json"], 60, env=env, cwd=cwd),
                            "tidal version").stdout)
    assert doc["tidal"] == VERSION and doc["runtimes"]["onnxruntime"] and doc["runtimes"]["tensorflow"] is None
    done = _run([venv / "bin" / "tidal", "doctor", "-o", "json"], 60, env=env, cwd=cwd)
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert done.returncode == 0 and checks["dependencies"]["status"] == "ok"
    assert checks["runtime: TensorFlow"]["status"] == "info" and "dev" in checks["extras"]["data"]["missing"]
    sim = _check(_run([venv / "bin" / "tidal", "simulate", "spot", "--traces", "aws1", "--policy", "spothedge",
                       "--repeats", "1", "--ticks", "600", "-o", "json"], 120, env=env, cwd=cwd), "tidal simulate")
    assert json.loads(sim.stdout)["trace"] == "aws1"


def test_the_demo_runs_to_its_summary(installed):
    venv, env, cwd, tmp = installed["venv"], installed["env"], installed["cwd"], installed["tmp"]
    demo_home = tmp / "demo-home"
    started = time.monotonic()
    try:
        done = _run([venv / "bin" / "tidal", "demo", "--quick", "--keep", "--home", demo_home], 300, env=env, cwd=cwd)
        installed["timings"]["demo --quick"] = time.monotonic() - started
        out = done.stdout
        assert done.returncode == 0, \
            f"tidal demo failed (exit {done.returncode}):\n{out[-4000:]}\n{done.stderr[-3000:]}"
        summary = out[out.index("\n== summary"):]
        sent, answered, errors = map(int, re.search(r"load: (\d+) requests sent, (\d+) answered 200, (\d+) errors",
                                                    summary).groups())
        assert sent > 0 and answered == sent and errors == 0, summary
        peak = int(re.search(r"scale-out: 1 -> (\d+) replicas", summary).group(1))
        assert peak >= 2, summary  # the autoscaler scaled out under the load
        assert re.search(r"preemption: \S+ reclaimed under load; no request lost", summary), summary
        assert "copied the sample sentiment classifier (ONNX model)" in out
        # The console, served by the control plane the demo left running, from the installed package's files.
        console = re.search(r"console: (http://127\.0\.0\.1:\d+/console/)", summary).group(1)
        with urllib.request.urlopen(console, timeout=10) as resp:
            assert resp.status == 200 and b"Tidal console" in resp.read()
        for name in ("app.js", "app.css"):
            with urllib.request.urlopen(f"{console}static/{name}", timeout=10) as resp:
                assert resp.read() == (REPO / "tidal" / "console" / "static" / name).read_bytes()
    finally:
        down = _run([venv / "bin" / "tidal", "down"], 120, env={**env, "TIDAL_HOME": str(demo_home)}, cwd=cwd)
    assert down.returncode == 0, down.stderr
