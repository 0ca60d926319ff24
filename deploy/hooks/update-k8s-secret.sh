#!/bin/sh
# pgmove switch hook: point the application's Kubernetes Secret at the new server.
#
#   cutover:
#     switchHook: [deploy/hooks/update-k8s-secret.sh, <namespace>, <secret-name>]
#
# Writes the keys host, port, database, user and password of Secret <namespace>/<secret-name>
# (created when missing, replaced otherwise — idempotent, as a switch hook must be). The password comes
# from the 0600 file pgmove hands over in PGMOVE_TARGET_PASSWORD_FILE (never from argv or a variable);
# without a target password reference in the spec the password key is left out.
# Restart the application afterwards if it reads the Secret only at start-up, e.g. add
#   kubectl -n "$namespace" rollout restart deployment/<app>
# Exit status: 0 only when the Secret was written (a non-zero exit fails the cutover cleanly).
set -eu
namespace=${1:?usage: update-k8s-secret.sh NAMESPACE SECRET_NAME}
name=${2:?usage: update-k8s-secret.sh NAMESPACE SECRET_NAME}
: "${PGMOVE_TARGET_HOST:?run by pgmove as a switch hook}"

set -- --from-literal=host="$PGMOVE_TARGET_HOST" \
  --from-literal=port="$PGMOVE_TARGET_PORT" \
  --from-literal=database="$PGMOVE_TARGET_DATABASE" \
  --from-literal=user="$PGMOVE_TARGET_USER"
if [ -n "${PGMOVE_TARGET_PASSWORD_FILE:-}" ]; then
  set -- "$@" --from-file=password="$PGMOVE_TARGET_PASSWORD_FILE"
fi
# create --dry-run | apply: one command for "create or replace", server-side validated.
kubectl create secret generic "$name" -n "$namespace" "$@" --dry-run=client -o yaml |
  kubectl apply -n "$namespace" -f -
echo "secret $namespace/$name now points at $PGMOVE_TARGET_HOST:$PGMOVE_TARGET_PORT/$PGMOVE_TARGET_DATABASE (migration $PGMOVE_MIGRATION_ID)"
