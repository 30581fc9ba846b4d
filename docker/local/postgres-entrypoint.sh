#!/bin/sh
# First start on an empty data directory: a cluster whose superuser is POSTGRES_USER with the
# password POSTGRES_PASSWORD (scram-sha-256 over the network; trust on the container's own unix
# socket, as the registry's image does), listening on every address of the container, and the
# database POSTGRES_DB. Then the command (postgres) replaces this shell.
set -eu
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" --username="$user" --pwfile="$pwfile" --encoding=UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        echo "CREATE DATABASE \"$db\" OWNER \"$user\";" | postgres --single -j -D "$PGDATA" postgres >/dev/null
    fi
    echo "postgres-entrypoint: created the cluster, user $user and database $db" >&2
fi
exec "$@"
