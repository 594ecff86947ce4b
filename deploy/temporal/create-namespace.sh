#!/bin/sh
# One-shot (deploy/compose.yaml, temporalio/admin-tools): creates TEMPORAL_NAMESPACE once the
# server answers, and waits until the namespace is usable, so that `durable-assistants
# setup-namespace` (the next one-shot) can register its search attributes at once.
set -eu

: "${TEMPORAL_ADDRESS:?}" "${TEMPORAL_NAMESPACE:?}"

wait_for() {
  what="$1"
  shift
  tries=0
  until "$@" >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -ge 60 ]; then
      echo "$what: still failing after 60 s: $*" >&2
      exit 1
    fi
    sleep 1
  done
}

wait_for "Temporal at $TEMPORAL_ADDRESS" temporal operator cluster health
if temporal operator namespace describe --namespace "$TEMPORAL_NAMESPACE" >/dev/null 2>&1; then
  echo "namespace $TEMPORAL_NAMESPACE exists"
else
  temporal operator namespace create --namespace "$TEMPORAL_NAMESPACE" --retention 72h
fi
wait_for "namespace $TEMPORAL_NAMESPACE" temporal operator search-attribute list --namespace "$TEMPORAL_NAMESPACE"
echo "namespace $TEMPORAL_NAMESPACE is ready"
