#!/usr/bin/env bash
# Prepare a fresh Debian 12 machine for ShadowMesh: system packages (as root) and the virtualenv.
# Idempotent: installs only what is missing. Used by `make demo`, `make test`, `make bench`.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the suite and the demo need (all from Debian's archive).
#   iproute2/iptables/nftables: namespaces, veth, bridges, filters and random loss (no netem here);  postgresql/redis-server: the scale-out path;
#   iperf3/socat: transfers in tunnel tests;  chromium: dashboard tests;  procps: pgrep/ps;
#   nginx-light: docker/nginx.conf run for real in front of Daphne (tests/meshadmin/project/test_tls_proxy.py);
#   ethtool: offloads off on the veths of lab/impair.py (delay and reordering without netem).
PKGS=(iproute2 iptables nftables iputils-ping procps postgresql redis-server iperf3 socat chromium
      wireguard-go wireguard-tools nebula sysstat nginx-light ethtool)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# Python >= 3.12 for Django 6 (pyenv's 3.13 when present), else the system python3 (Django 5.2 LTS).
pick_python() {
  if command -v pyenv >/dev/null 2>&1 && PYENV_VERSION=3.13.0 python3 -c 'import sys; assert sys.version_info >= (3, 13)' 2>/dev/null; then
    echo "env PYENV_VERSION=3.13.0 python3"; return
  fi
  for c in python3.13 python3.12 python3; do
    command -v "$c" >/dev/null 2>&1 && { echo "$c"; return; }
  done
  echo "bootstrap: no python3 found" >&2; exit 1
}

if [ ! -x .venv/bin/python ]; then
  $(pick_python) -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
