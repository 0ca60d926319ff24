#!/usr/bin/env bash
# Re-records the workflow histories the replay test (test/replay/replay.test.ts) replays: runs the
# integration tests that cover every workflow path against the real stack (Temporal dev server,
# PostgreSQL, moto) and keeps the history of every run they started. Run it after adding a workflow
# path. Each recording goes into a directory of its own, named after the day and the commit it was
# recorded on (test/replay/histories/<date>-<commit>/): older directories stay — they are the runs an
# older worker left open — until the patches they need are retired (README, "Worker upgrades"). A
# second recording on the same commit replaces only the files of the test files it runs.
#   npm run record-histories [-- test/integration/one.test.ts ...]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="$PWD/test/replay/histories/$(date -u +%F)-$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- workflows || echo -dirty)"
FILES=("$@")
if [ ${#FILES[@]} -eq 0 ]; then
  FILES=(
    test/integration/offline-migration.test.ts   # offline completed (CLI and plain temporal), snapshot copy
    test/integration/abort.test.ts               # offline aborted (signal and pgmove abort)
    test/integration/logical-migration.test.ts   # cutover refused, failed, then completed; pgmove unfreeze
    test/integration/logical-edges.test.ts       # syncing with continue-as-new, abort while syncing, autoCutover, WAL limit
    test/integration/logical-crash.test.ts       # worker killed in copy, syncing and cutover (retried activities)
    test/integration/cluster-migration.test.ts   # migrateCluster with children, a called-off and a switching cutover
    test/integration/cluster-abort.test.ts       # cluster abort and cancel awaiting children; parent continued as new while children run
    test/integration/many-tables.test.ts         # offline copy with the plan on the target, continued as new
    test/integration/privilege-elevation.test.ts # elevation and revert on every ending
    test/aws/dms.test.ts                         # method dms
    test/aws/rds-target.test.ts                  # provisioning, abort with AWS cleanup, cleanupMigration
    test/integration/recover.test.ts             # recoverMigration after runs terminated in each phase
    test/integration/freeze-crash.test.ts        # a cutover retried after a worker lost inside the freeze, and one given up
    test/integration/rollback.test.ts            # rollback window: rollback (retried in its switch hook), finalize after a lost worker; pgmove unfreeze of the target
  )
fi
mkdir -p "$OUT"
for file in "${FILES[@]}"; do
  rm -f "$OUT/$(basename "$file" .test.ts)"--*.json
done
PGMOVE_RECORD_HISTORIES="$OUT" npx jest --runInBand "${FILES[@]}"
echo "recorded $(ls "$OUT" | wc -l) histories ($(du -sh "$OUT" | cut -f1)) in $OUT"
