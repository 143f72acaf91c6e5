#!/usr/bin/env bash
# Open the MLflow UI on this checkout's tracking store: bash mlflow/serve.sh [PORT]  (default 5000)
# Then browse http://127.0.0.1:PORT. Runs log here by default (logger.tracking_uri: null).
# ALIGNLAB_MLFLOW_DIR=/some/dir serves the store in that folder instead (mlflow.db + artifacts/);
# runs started with the same variable set and no logger.tracking_uri log there too.
set -euo pipefail
store="${ALIGNLAB_MLFLOW_DIR:-$(dirname "$0")}"
mkdir -p "$store"
store="$(cd "$store" && pwd)"
cd "$store"  # the server's working folder: nothing of it lands in the caller's
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true
exec mlflow server \
  --backend-store-uri "sqlite:///$store/mlflow.db" \
  --default-artifact-root "$store/artifacts" \
  --host 127.0.0.1 --port "${1:-5000}" --workers 1
