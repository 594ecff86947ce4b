#!/bin/sh
# One-shot (deploy/compose.yaml, temporalio/admin-tools): Temporal's two PostgreSQL databases
# and their schemas, brought up to the version this admin-tools image ships. Running it again
# is harmless: setup-schema leaves a newer schema alone and update-schema applies only the
# versions a database lacks, so a newer admin-tools image upgrades the schema in place.
set -eu

: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}" "${SQL_PASSWORD:?}"
port="${DB_PORT:-5432}"
schemas=/etc/temporal/schema/postgresql/v12

sql_tool() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$port" -u "$POSTGRES_USER" "$@"
}

tries=0
until nc -z "$POSTGRES_SEEDS" "$port"; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "PostgreSQL at $POSTGRES_SEEDS:$port did not answer in 60 s" >&2
    exit 1
  fi
  sleep 1
done

for database in temporal:temporal temporal_visibility:visibility; do
  name="${database%%:*}"
  kind="${database#*:}"
  # `create` fails when the database exists (the postgres image creates one named after the
  # user); a real failure shows in setup-schema, which needs the database.
  sql_tool --db "$name" create 2>/dev/null || echo "database $name exists"
  sql_tool --db "$name" setup-schema -v 0.0
  sql_tool --db "$name" update-schema -d "$schemas/$kind/versioned"
done
echo "Temporal's schemas are ready"
