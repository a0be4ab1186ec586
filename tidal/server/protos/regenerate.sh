#!/bin/sh
# Regenerates the Open Inference Protocol's Python modules from open_inference_grpc.proto.
# Needs grpcio-tools (in the dev extra): sh tidal/server/protos/regenerate.sh
set -e
cd "$(dirname "$0")"
python=${PYTHON:-python}
"$python" -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. open_inference_grpc.proto
# The service module imports its messages as a top-level module; inside this package the import is relative.
sed -i 's/^import open_inference_grpc_pb2 as/from . import open_inference_grpc_pb2 as/' open_inference_grpc_pb2_grpc.py
# protoc pins the protobuf runtime to its own release or newer; the messages use nothing past protobuf 5's
# builder API, and tritonclient needs protobuf 6, so the pin is dropped.
sed -i '/^_runtime_version.ValidateProtobufRuntimeVersion(/,/^)/d' open_inference_grpc_pb2.py
# The messages live in a descriptor pool of their own: tritonclient and KServe register the same
# "inference.*" names in the default pool, and one process may hold them and these (tests, embedders).
sed -i 's/^DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(/_POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = _POOL.AddSerializedFile(/' open_inference_grpc_pb2.py
