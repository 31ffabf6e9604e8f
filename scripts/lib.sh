# Shared by scripts/demo and scripts/test: set up what sisguard needs, idempotently.
# shellcheck shell=bash

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
PY="$VENV/bin/python"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

find_python() {
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "sisguard needs Python >= 3.11 on PATH" >&2
  return 1
}

# The virtual environment, with sisguard installed editable (+ dev tools).
ensure_venv() {
  local stamp="$VENV/.sisguard-installed" want
  want="$(sha256sum "$REPO/pyproject.toml" | cut -c1-16)"
  if [ -x "$PY" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  say "setting up the virtual environment in .venv (once)"
  [ -x "$PY" ] || "$(find_python)" -m venv "$VENV"
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet --progress-bar off -e "$REPO[dev]"
  echo "$want" > "$stamp"
}

# Debian packages the tests use: real sshd, sudo, useradd, rsyslog; nftables cuts the
# network for the fault matrix (tests/faults/test_network_cut.py).
APT_PACKAGES=(openssh-server openssh-client sshpass sudo passwd rsyslog procps nftables)

ensure_system_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "missing Debian packages (${missing[*]}): tests that need them will fail in CI"
    return 0
  fi
  say "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null
}
