#!/usr/bin/env bash
# Start (or stop) a throwaway PostgreSQL cluster and Redis server on loopback for the tests.
#   eval "$(scripts/services.sh start DIR)"   -> exports DATABASE_URL and REDIS_URL
#   scripts/services.sh stop DIR
#   scripts/services.sh stop-pg|start-pg|stop-redis|start-redis DIR
#       stop or start again one service of a cluster made by `start DIR` (same data, same port),
#       for outage tests; Redis keeps nothing across a restart (--save '')
# Everything lives in DIR (data, sockets, logs); ports are picked free at start.
set -euo pipefail
cmd=${1:?start|stop|stop-pg|start-pg|stop-redis|start-redis}; dir=${2:?state directory}
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
start_pg() {  # start_pg PORT
  as_pg "$pgbin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w \
    -o "-p $1 -k $dir/pg -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off" start >/dev/null
}
start_redis() {  # start_redis PORT
  redis-server --port "$1" --bind 127.0.0.1 --daemonize yes --save '' --appendonly no \
    --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
  for _ in $(seq 50); do redis-cli -p "$1" ping >/dev/null 2>&1 && break; sleep 0.1; done
}
stop_redis() {  # waits until the server has exited, so its port can be bound again
  [ -f "$dir/redis.pid" ] || return 0
  local pid; pid=$(cat "$dir/redis.pid")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
}
port_of() {  # the port `start` picked for service $1
  cat "$dir/$1.port" 2>/dev/null || { echo "services: no $1 started in $dir" >&2; exit 1; }
}

case "$cmd" in
start)
  [ -n "$pgbin" ] || { echo "services: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
  command -v redis-server >/dev/null || { echo "services: redis-server is not installed" >&2; exit 1; }
  mkdir -p "$dir/pg"
  chmod a+x "$dir"   # the postgres user must pass through DIR (mktemp -d makes it 0700)
  if [ "$(id -u)" = 0 ]; then chown -R postgres: "$dir/pg"; fi
  pgport=$(free_port); redisport=$(free_port)
  as_pg "$pgbin/initdb" -D "$dir/pg/data" -U shadowmesh --auth=trust -E UTF8 >"$dir/pg/initdb.log" 2>&1
  echo "$pgport" >"$dir/pg.port"; echo "$redisport" >"$dir/redis.port"
  start_pg "$pgport"
  as_pg "$pgbin/createdb" -h 127.0.0.1 -p "$pgport" -U shadowmesh shadowmesh
  start_redis "$redisport"
  echo "export DATABASE_URL=postgres://shadowmesh@127.0.0.1:$pgport/shadowmesh"
  echo "export REDIS_URL=redis://127.0.0.1:$redisport/0"
  ;;
stop)
  [ -d "$dir/pg/data" ] && as_pg "$pgbin/pg_ctl" -D "$dir/pg/data" -m immediate stop >/dev/null 2>&1 || true
  [ -f "$dir/redis.pid" ] && kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
  ;;
stop-pg)
  as_pg "$pgbin/pg_ctl" -D "$dir/pg/data" -m fast -w stop >/dev/null
  ;;
start-pg)
  start_pg "$(port_of pg)"
  ;;
stop-redis)
  stop_redis
  ;;
start-redis)
  start_redis "$(port_of redis)"
  ;;
*) echo "usage: $0 start|stop|stop-pg|start-pg|stop-redis|start-redis DIR" >&2; exit 2 ;;
esac
