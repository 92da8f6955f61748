#!/bin/sh
# The official postgres image runs this once, on an empty data directory, as the superuser: the roles, the
# app database with its tables (owned by the app's role) and the service role's grants; then the service
# role's password from RESYNC_PG_PASSWORD (never written in a file).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -f "${RESYNC_INIT_SQL:-/resync/init.sql}"
echo "ALTER ROLE resync PASSWORD :'pw';" | psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -v pw="$RESYNC_PG_PASSWORD"
