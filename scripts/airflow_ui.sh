#!/usr/bin/env bash
# `make ui`: the Airflow 3 UI on this project (same AIRFLOW_HOME, data root and local S3 as `make demo`).
# Opens http://127.0.0.1:8080 with the mer_daily DAG, its runs and task logs. Backfill from the UI
# (DAG page -> Trigger -> Backfill) or from another shell:
#   AIRFLOW_HOME=var/airflow_home .venv/bin/airflow backfill create --dag-id mer_daily \
#       --from-date 2026-01-13 --to-date 2026-01-16 --max-active-runs 1
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
# `airflow standalone` starts its components as plain `airflow ...` looked up on PATH: without an
# activated venv all four fail (FileNotFoundError). Put the project's venv first.
export PATH="$PWD/$BIN:$PATH"
ROOT="${MER_ROOT:-$PWD/var}"
export MER_ROOT="$ROOT"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/airflow_home}"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__API__HOST="${AIRFLOW__API__HOST:-127.0.0.1}"
# Local single-user setup: every user is admin, no login form. Do not use in a shared deployment.
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS:-True}"
# Quick retries: a local run should not sit in a 1-minute backoff.
export MER_DAG__RETRY_DELAY_S="${MER_DAG__RETRY_DELAY_S:-5}"
mkdir -p "$AIRFLOW_HOME"

# A local S3 endpoint for publish (moto on 127.0.0.1, bucket mirrored under $ROOT/s3), unless one is given.
S3_PID=""
if [ -z "${AWS_ENDPOINT_URL:-}" ]; then
  PORT="${MER_LOCAL_S3_PORT:-9400}"
  "$BIN/python" -m mer.app.local_s3 --port "$PORT" &
  S3_PID=$!
  export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_ACCESS_KEY_ID=mer-local AWS_SECRET_ACCESS_KEY="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" AWS_DEFAULT_REGION=us-east-1
fi
cleanup() { if [ -n "$S3_PID" ]; then kill -TERM "$S3_PID" 2>/dev/null || true; wait "$S3_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

"$BIN/airflow" db migrate >/dev/null
echo "Airflow UI: http://$AIRFLOW__API__HOST:${AIRFLOW__API__PORT:-8080}   (AIRFLOW_HOME=$AIRFLOW_HOME, data root $MER_ROOT)"
echo "Trigger mer_daily with {\"generate_if_absent\": true} to create synthetic logs for its date."
"$BIN/airflow" standalone
