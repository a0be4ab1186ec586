"""gRPC's parts are optional: --port 0 turns gRPC off; without tensorflow-serving-api only V2's gRPC service is on."""

from __future__ import annotations

import sys

from tidal.server import main, tfs_protos


def settings(port: int) -> main.ServerSettings:
    return main.ServerSettings(grpc_port=port, model_base_path="/nonexistent")


def test_port_zero_turns_grpc_off():
    assert main._grpc_server(settings(0), manager=None, metrics=None) is None


def test_without_the_serving_api_grpc_serves_v2_alone_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(tfs_protos, "available", lambda: False)
    server = main._grpc_server(settings(8500), manager=None, metrics=None)
    assert server is not None and server.pb is None
    services = [h.service_name() for h in server.handlers()]
    assert services == ["inference.GRPCInferenceService"]
    assert "pip install tidal[tensorflow]" in caplog.text


def test_availability_needs_tensorflow_itself(monkeypatch):
    # tensorflow-serving-api's modules import tensorflow's protos, so a missing tensorflow means no gRPC.
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    assert tfs_protos.available() is False
