#!/bin/sh
# Run once by the postgres image on an empty data directory
# (/docker-entrypoint-initdb.d): creates the data-plane database "onyx" and the
# control-plane database "control" and loads the Onyx-like fixture into them.
# Seed tenants afterwards with the fixture functions, e.g.
#   docker compose exec postgres psql -U postgres -d onyx -c "SELECT fixture.create_tenant('tenant_…', 130)"
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<'SQL'
CREATE DATABASE onyx;
CREATE DATABASE control;
SQL
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname onyx -f /fixtures/onyx/dataplane.sql
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname control -f /fixtures/onyx/controlplane.sql
