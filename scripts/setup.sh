#!/usr/bin/env bash
# Idempotent set-up: Debian packages (prometheus, alertmanager, docker-compose) and .venv.
# Fast when everything is already in place; `make setup` and every make target call it.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)
command -v amtool >/dev/null 2>&1 || need_pkgs+=(prometheus-alertmanager)
command -v docker-compose >/dev/null 2>&1 || need_pkgs+=(docker-compose)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"
  else
    echo "setup: missing Debian packages ${need_pkgs[*]}; run as root or with sudo: apt-get install ${need_pkgs[*]}" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${need_pkgs[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  # The Debian packages start their own daemons; vigia runs its own instances. Stop the daemons
  # the way the packages started them: systemd units, or (no systemd, e.g. in a container) the
  # init scripts, which stop exactly the process of their pidfile.
  for svc in prometheus prometheus-alertmanager; do
    if [ -d /run/systemd/system ]; then
      $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$svc" ]; then
      $sudo "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
      $sudo update-rc.d "$svc" disable >/dev/null 2>&1 || true
    fi
  done
fi

stamp=.venv/.vigia-installed
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing vigia and its test dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
