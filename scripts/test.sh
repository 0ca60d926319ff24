#!/usr/bin/env bash
# The README's test command (npm test): static checks first, then the whole jest suite, one file at
# a time (the integration tests start their own Temporal and PostgreSQL servers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-tools.sh >/dev/null
npx tsc --noEmit
npx eslint --max-warnings 0 .
exec npx jest --runInBand "$@"
