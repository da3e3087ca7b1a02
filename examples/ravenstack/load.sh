#!/usr/bin/env sh
# Load the RavenStack SaaS data set (../shared/data/ravenstack-saas, by River @ Rivalytics,
# MIT-like licence, fully synthetic) into a healthscore store, then score it.
# Usage: sh examples/ravenstack/load.sh [DATA_DIR] [DB]
# tests/test_recipes.py runs the `healthscore` lines of this file, so keep one per line.
set -eu
# a fresh clone: `make demo` (or `make test`) installs the command into .venv; use it
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ -x "$ROOT/.venv/bin/healthscore" ]; then PATH="$ROOT/.venv/bin:$PATH"; fi
command -v healthscore >/dev/null || {
  echo "healthscore not found: run \`make demo\` in $ROOT first (or pip install -e $ROOT)" >&2
  exit 1
}
DATA=${1:-../shared/data/ravenstack-saas}
DB=${2:-ravenstack.duckdb}
MODEL=$(dirname "$0")/healthscore.yaml
healthscore load accounts $DATA/ravenstack_accounts.csv --db $DB --map account_name=name --map signup_date=created_at --map plan_tier=segment
healthscore load subscriptions $DATA/ravenstack_subscriptions.csv --db $DB --map plan_tier=plan --map mrr_amount=mrr --map arr_amount=arr --map auto_renew_flag=auto_renew
healthscore load usage_events $DATA/ravenstack_feature_usage.csv --db $DB --account-from subscriptions --map usage_id=event_id --map usage_date=ts --map feature_name=event --map usage_count=quantity --rejects ravenstack_usage_rejects.csv
healthscore load tickets $DATA/ravenstack_support_tickets.csv --db $DB --map submitted_at=opened_at --map satisfaction_score=csat
healthscore load outcomes $DATA/ravenstack_churn_events.csv --db $DB --map churn_event_id=outcome_id --map churn_date=ts --set kind=churned
healthscore score --db $DB --model $MODEL --as-of 2025-01-01
healthscore backtest --db $DB --model $MODEL --from 2023-06-01 --to 2024-10-01 --every 1mo
