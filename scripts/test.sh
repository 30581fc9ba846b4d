#!/usr/bin/env bash
# The whole test suite (what `make test` and CI run): lint (ruff), types (mypy), then two pytest passes:
#   1. embedded defaults: SQLite, in-memory channel layer, eager Celery — every test except those
#      that need PostgreSQL/Redis;
#   2. the scale-out path: the control-plane tests again (tests/meshadmin, dashboard included), plus the PostgreSQL-only ones
#      (token and IPAM races, two Daphnes), against a real PostgreSQL and Redis started here.
# Privileged tests (network namespaces, TUN) need root; as non-root they are deselected loudly.
# Extra arguments go to both pytest runs (e.g. `make test ARGS="-k enroll"`).
#
# What runs at the same time (the machine has two cores; most of the suite's time is spent waiting
# on agents, servers, timers and the network, not computing):
#   - mypy runs beside pass 1; its report is printed after pass 1's.
#   - pass 1 spreads its tests over SHADOWMESH_TEST_WORKERS pytest-xdist workers (default 3; 0 = one
#     process). Every test there has its own tmp dir, namespaces and free ports; the tests that share
#     a module's server and browser stay on one worker (tests/conftest.py's scheduler, MODULE_UNITS).
#   - pass 2 runs beside pass 1, in one process (some of its tests stop and restart the PostgreSQL
#     and Redis that every pass-2 test shares); its report is printed after pass 1's.
# Each part's exit status counts; every part is stopped, and the services and temp dirs removed, on
# any exit (Ctrl-C and SIGTERM included).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST=(.venv/bin/python -m pytest -q -p no:cacheprovider)
WORKERS=${SHADOWMESH_TEST_WORKERS:-3}
[[ $WORKERS =~ ^[0-9]+$ ]] || { echo "test: SHADOWMESH_TEST_WORKERS must be a number, not '$WORKERS'" >&2; exit 2; }
if [ "$WORKERS" -gt 0 ]; then XDIST=(-n "$WORKERS" --dist loadgroup); else XDIST=(-n 0); fi

state=$(mktemp -d /tmp/shadowmesh-test.XXXXXX)
chmod 755 "$state"
jobs_running=()  # process groups of the parts running in the background
cleanup() {
  trap - EXIT INT TERM
  local pid
  for pid in "${jobs_running[@]}"; do  # each part runs in a session of its own: end it and its children
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  for pid in "${jobs_running[@]}"; do wait "$pid" 2>/dev/null || true; done
  scripts/services.sh stop "$state" || true
  rm -rf "$state"
}
trap cleanup EXIT
trap 'echo "test: interrupted" >&2; exit 130' INT TERM

marks="not postgres"
if [ "$(id -u)" != 0 ]; then
  echo "test: NOT ROOT — privileged tests (namespaces, TUN) are deselected; run as root for the full suite" >&2
  marks="$marks and not privileged"
fi

status=0
ran_any=0
start() {  # start NAME LOG CMD...: CMD in the background, in a session of its own; LOG "-" = this terminal
  local log=$2; shift 2
  if [ "$log" = - ]; then setsid "$@" & else setsid "$@" >"$log" 2>&1 & fi
  jobs_running+=("$!")
}
finish() {  # finish PID -> its exit status
  local rc=0
  wait "$1" || rc=$?
  local kept=()
  for pid in "${jobs_running[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
  jobs_running=("${kept[@]}")
  return $rc
}
judge() {  # judge NAME RC: exit code 5 (nothing collected) is reported, not fatal
  case $2 in
    0) ran_any=1 ;;
    1) ran_any=1; echo "test: $1 failed (exit 1)" >&2; status=1 ;;  # tests ran, some failed
    5) echo "test: $1 collected no tests" ;;
    *) echo "test: $1 failed (exit $2)" >&2; status=1 ;;
  esac
}

echo "=== lint: ruff check ==="
.venv/bin/ruff check . || { echo "test: ruff found problems (run: .venv/bin/ruff check .)" >&2; status=1; }

# --- types, in the background
types_start=$SECONDS
start types "$state/types.log" .venv/bin/mypy
types_pid=${jobs_running[-1]}

# --- pass 2, in the background: PostgreSQL and Redis first, then the control-plane tests
pass2() {
  local urls
  urls=$(scripts/services.sh start "$state") || { echo "test: could not start PostgreSQL/Redis" >&2; return 90; }
  eval "$urls"
  SHADOWMESH_DATA_DIR="$state/data-pg" .venv/bin/python -m pytest -q -p no:cacheprovider -n 0 \
    -m "not privileged and not browser" tests/meshadmin "$@"
}
export -f pass2
export state
start "pass 2" "$state/pass2.log" bash -c 'pass2 "$@"' pass2 "$@"
pass2_pid=${jobs_running[-1]}

# --- pass 1, in the foreground (its output live)
echo "=== pass 1: embedded defaults (SQLite), ${WORKERS} workers; mypy and pass 2 run alongside ==="
pass1_start=$SECONDS
start "pass 1" - env SHADOWMESH_DATA_DIR="$state/data" "${PYTEST[@]}" "${XDIST[@]}" -m "$marks" "$@"
finish "${jobs_running[-1]}"; judge "pass 1" $?
echo "pass 1: $((SECONDS - pass1_start)) s"

echo "=== types: mypy (pyproject.toml [tool.mypy]) ==="
finish "$types_pid"; rc=$?
cat "$state/types.log"
[ $rc = 0 ] || { echo "test: mypy found type errors (run: .venv/bin/mypy)" >&2; status=1; }
echo "types: done $((SECONDS - types_start)) s after it started"

echo "=== pass 2: PostgreSQL + Redis (tests/meshadmin) ==="
kill -0 "$pass2_pid" 2>/dev/null && echo "(waiting for pass 2)"
finish "$pass2_pid"; rc=$?
cat "$state/pass2.log"
if [ $rc = 90 ]; then status=1; else judge "pass 2" $rc; fi
echo "pass 2: done $((SECONDS - pass1_start)) s after pass 1 started"

[ $ran_any = 1 ] || { echo "test: no tests ran at all" >&2; status=1; }
exit $status
