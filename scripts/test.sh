#!/usr/bin/env bash
# The whole test suite (what `make test` and CI run): lint (ruff), types (mypy), then two pytest passes:
#   1. embedded defaults: SQLite, in-memory channel layer, eager Celery — every test except those
#      that need PostgreSQL/Redis;
#   2. the scale-out path: the control-plane tests again (tests/meshadmin, dashboard included), plus the PostgreSQL-only ones
#      (token and IPAM races, two Daphnes), against a real PostgreSQL and Redis started here.
# Privileged tests (network namespaces, TUN) need root; as non-root they are deselected loudly.
# Extra arguments go to both pytest runs (e.g. `make test ARGS="-k enroll"`).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST=(.venv/bin/python -m pytest -q -p no:cacheprovider)

state=$(mktemp -d /tmp/shadowmesh-test.XXXXXX)
chmod 755 "$state"
cleanup() { scripts/services.sh stop "$state" || true; rm -rf "$state"; }
trap cleanup EXIT INT TERM

marks="not postgres"
if [ "$(id -u)" != 0 ]; then
  echo "test: NOT ROOT — privileged tests (namespaces, TUN) are deselected; run as root for the full suite" >&2
  marks="$marks and not privileged"
fi

status=0
ran_any=0
run() {  # run one pytest pass; exit code 5 (nothing collected) is reported, not fatal
  local name=$1; shift
  echo "=== $name ==="
  "${PYTEST[@]}" "$@"
  local rc=$?
  case $rc in
    0) ran_any=1 ;;
    5) echo "test: $name collected no tests" ;;
    *) status=1 ;;
  esac
}

echo "=== lint: ruff check ==="
.venv/bin/ruff check . || { echo "test: ruff found problems (run: .venv/bin/ruff check .)" >&2; status=1; }

echo "=== types: mypy (pyproject.toml [tool.mypy]) ==="
types_start=$SECONDS
.venv/bin/mypy || { echo "test: mypy found type errors (run: .venv/bin/mypy)" >&2; status=1; }
echo "types: $((SECONDS - types_start)) s"

export SHADOWMESH_DATA_DIR="$state/data"
run "pass 1: embedded defaults (SQLite)" -m "$marks" "$@"

if eval "$(scripts/services.sh start "$state")"; then
  export SHADOWMESH_DATA_DIR="$state/data-pg"
  run "pass 2: PostgreSQL + Redis" -m "not privileged and not browser" tests/meshadmin "$@"
  unset DATABASE_URL REDIS_URL
else
  echo "test: could not start PostgreSQL/Redis" >&2
  status=1
fi

[ $ran_any = 1 ] || { echo "test: no tests ran at all" >&2; status=1; }
exit $status
