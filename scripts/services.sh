#!/usr/bin/env bash
# Start (or stop) a throwaway PostgreSQL cluster and Redis server on loopback for the tests.
#   eval "$(scripts/services.sh start DIR)"   -> exports DATABASE_URL and REDIS_URL
#   scripts/services.sh stop DIR
# Everything lives in DIR (data, sockets, logs); ports are picked free at start.
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?state directory}
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "$cmd" in
start)
  [ -n "$pgbin" ] || { echo "services: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
  command -v redis-server >/dev/null || { echo "services: redis-server is not installed" >&2; exit 1; }
  mkdir -p "$dir/pg"
  [ "$(id -u)" = 0 ] && chown -R postgres: "$dir/pg"
  pgport=$(free_port); redisport=$(free_port)
  as_pg "$pgbin/initdb" -D "$dir/pg/data" -U shadowmesh --auth=trust -E UTF8 >"$dir/pg/initdb.log" 2>&1
  as_pg "$pgbin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w \
    -o "-p $pgport -k $dir/pg -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off" start >/dev/null
  as_pg "$pgbin/createdb" -h 127.0.0.1 -p "$pgport" -U shadowmesh shadowmesh
  redis-server --port "$redisport" --bind 127.0.0.1 --daemonize yes --save '' --appendonly no \
    --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
  for _ in $(seq 50); do redis-cli -p "$redisport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "export DATABASE_URL=postgres://shadowmesh@127.0.0.1:$pgport/shadowmesh"
  echo "export REDIS_URL=redis://127.0.0.1:$redisport/0"
  ;;
stop)
  [ -d "$dir/pg/data" ] && as_pg "$pgbin/pg_ctl" -D "$dir/pg/data" -m immediate stop >/dev/null 2>&1 || true
  [ -f "$dir/redis.pid" ] && kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
  ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
