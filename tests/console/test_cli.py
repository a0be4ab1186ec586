"""`tidal console` prints where the running control plane serves the console."""

from __future__ import annotations

import json

from tidal.cli import main


def test_prints_the_url_from_the_address_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "address.json").write_text(json.dumps({"api": "http://127.0.0.1:8470", "gateway": "x"}))
    monkeypatch.setenv("TIDAL_HOME", str(tmp_path))
    monkeypatch.delenv("TIDAL_API", raising=False)
    assert main(["console"]) == 0
    assert capsys.readouterr().out == "http://127.0.0.1:8470/console/\n"
    monkeypatch.setenv("TIDAL_API", "http://10.0.0.5:9000/")
    assert main(["console", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"url": "http://10.0.0.5:9000/console/"}


def test_no_control_plane_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TIDAL_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("TIDAL_API", raising=False)
    assert main(["console"]) == 2
    err = capsys.readouterr().err
    assert "not running" in err and "tidal up" in err and err.count("\n") == 1
