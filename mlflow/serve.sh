#!/usr/bin/env bash
# Open the MLflow UI on this checkout's tracking store: bash mlflow/serve.sh [PORT]  (default 5000)
# Then browse http://127.0.0.1:PORT. Runs log here by default (logger.tracking_uri: null).
set -euo pipefail
cd "$(dirname "$0")"
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true
exec mlflow server \
  --backend-store-uri "sqlite:///$PWD/mlflow.db" \
  --default-artifact-root "$PWD/artifacts" \
  --host 127.0.0.1 --port "${1:-5000}" --workers 1
