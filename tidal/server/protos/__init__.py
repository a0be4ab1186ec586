"""The Open Inference Protocol's gRPC messages and service, generated from its own .proto (regenerate.sh)."""
