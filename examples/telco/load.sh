#!/usr/bin/env sh
# Load IBM's Telco customer churn sample (../shared/data/ibm-telco-churn-v11, IBM sample
# data terms: internal testing only, do not redistribute) into a healthscore store, then
# measure and calibrate the model on it. The data is one snapshot with no dates.
# Usage: sh examples/telco/load.sh [DATA_DIR] [DB]
# tests/test_recipes.py runs the `healthscore` lines of this file, so keep one per line.
set -eu
# a fresh clone: `make demo` (or `make test`) installs the command into .venv; use it
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ -x "$ROOT/.venv/bin/healthscore" ]; then PATH="$ROOT/.venv/bin:$PATH"; fi
command -v healthscore >/dev/null || {
  echo "healthscore not found: run \`make demo\` in $ROOT first (or pip install -e $ROOT)" >&2
  exit 1
}
DATA=${1:-../shared/data/ibm-telco-churn-v11}
DB=${2:-telco.duckdb}
HERE=$(dirname "$0")
MODEL=$HERE/healthscore.yaml
healthscore load accounts $DATA/Telco_customer_churn_demographics.csv --db $DB --spec $HERE/demographics.yaml
healthscore load accounts $DATA/Telco_customer_churn_services.csv --db $DB --spec $HERE/services.yaml
healthscore load outcomes $DATA/Telco_customer_churn_status.csv --db $DB --spec $HERE/status.yaml
healthscore backtest --snapshot --db $DB --model $MODEL
healthscore calibrate --snapshot --db $DB --model $MODEL --out telco-calibrated.yaml
healthscore model suggest --db $DB --snapshot --out telco-suggested.yaml
healthscore calibrate --snapshot --db $DB --model telco-suggested.yaml --out telco-suggested-calibrated.yaml
