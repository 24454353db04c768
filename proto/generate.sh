#!/usr/bin/env bash
# Regenerate proto/sync_pb2*.py from proto/sync.proto. CI fails if they are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. proto/sync.proto
