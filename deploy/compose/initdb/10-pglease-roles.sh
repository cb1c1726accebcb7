#!/bin/sh
# Run once by the postgres image at the cluster's first start (docker-entrypoint-initdb.d), as
# the superuser: the roles config/issuer.toml describes, for the compose stack's pglease.
#   pglease_admin  logs in for the issuer; creates and drops the lease roles
#   app_owner      owns the application's objects (act_as), outlives every lease
#   app_rw         what each lease role is a member of
set -eu
psql -v ON_ERROR_STOP=1 -v admin_password="$PGLEASE_ADMIN_DB_PASSWORD" \
    --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE pglease_admin LOGIN CREATEROLE PASSWORD :'admin_password';
CREATE ROLE app_owner NOLOGIN;
CREATE ROLE app_rw NOLOGIN;
GRANT app_owner, app_rw TO pglease_admin WITH ADMIN OPTION;
CREATE DATABASE app OWNER app_owner;
SQL
