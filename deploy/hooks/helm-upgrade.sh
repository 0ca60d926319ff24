#!/bin/sh
# pgmove switch hook: upgrade a Helm release so it uses the new server, keeping all other values.
#
#   cutover:
#     switchHook: [deploy/hooks/helm-upgrade.sh, <namespace>, <release>, <chart>, <values prefix>]
#   e.g.        [deploy/hooks/helm-upgrade.sh, data, trino, trino/trino, metastore.db]
#
# Runs `helm upgrade <release> <chart> -n <namespace> --reuse-values --wait` with
#   <prefix>.host, <prefix>.port, <prefix>.database, <prefix>.user set from the new server and
#   <prefix>.password set with --set-file from the 0600 file pgmove hands over (the value never enters argv).
# The chart argument must be the chart the release was installed from (helm needs it for an upgrade);
# pin its version with HELM_CHART_VERSION when the repository has moved on.
# Exit status: helm's (a non-zero exit fails the cutover cleanly).
set -eu
usage='usage: helm-upgrade.sh NAMESPACE RELEASE CHART VALUES_PREFIX'
namespace=${1:?$usage}
release=${2:?$usage}
chart=${3:?$usage}
prefix=${4:?$usage}
: "${PGMOVE_TARGET_HOST:?run by pgmove as a switch hook}"

set -- upgrade "$release" "$chart" -n "$namespace" --reuse-values --wait \
  --set-string "$prefix.host=$PGMOVE_TARGET_HOST" \
  --set-string "$prefix.port=$PGMOVE_TARGET_PORT" \
  --set-string "$prefix.database=$PGMOVE_TARGET_DATABASE" \
  --set-string "$prefix.user=$PGMOVE_TARGET_USER"
if [ -n "${HELM_CHART_VERSION:-}" ]; then set -- "$@" --version "$HELM_CHART_VERSION"; fi
if [ -n "${PGMOVE_TARGET_PASSWORD_FILE:-}" ]; then set -- "$@" --set-file "$prefix.password=$PGMOVE_TARGET_PASSWORD_FILE"; fi
helm "$@"
echo "release $namespace/$release now uses $PGMOVE_TARGET_HOST:$PGMOVE_TARGET_PORT/$PGMOVE_TARGET_DATABASE (migration $PGMOVE_MIGRATION_ID)"
