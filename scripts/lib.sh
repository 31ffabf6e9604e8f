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
# network for the fault matrix (tests/faults/test_network_cut.py); python3-venv, rpm,
# rpm2cpio and cpio install and inspect the packages (tests/packaging); nginx (light) and
# apache2 are the web servers whose configurations and logs the agent reads
# (tests/e2e/test_webroots.py, tests/e2e/test_weblog*.py).
APT_PACKAGES=(openssh-server openssh-client sshpass sudo passwd rsyslog procps nftables
              python3-venv rpm rpm2cpio cpio nginx nginx-light apache2
              rsyslog-gnutls)

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

# nfpm (a Go module: one description gives the .deb and the .rpm), built once into the cache.
NFPM_VERSION=v2.45.2
NFPM_BIN="${SISGUARD_CACHE:-$HOME/.cache/sisguard}/bin"
ensure_nfpm() {
  if [ -x "$NFPM_BIN/nfpm" ] && "$NFPM_BIN/nfpm" --version 2>/dev/null | grep -q "${NFPM_VERSION#v}"; then
    return 0
  fi
  command -v go >/dev/null || { say "nfpm needs Go to build (not found)"; return 1; }
  say "building nfpm $NFPM_VERSION with go install (once, into $NFPM_BIN)"
  mkdir -p "$NFPM_BIN"
  GOBIN="$NFPM_BIN" GOFLAGS=-mod=mod go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"
}

# The agent runs on the Python a server has (3.9 and later): its tests and a mypy pass run
# on the oldest interpreters this machine has too, each in a virtual environment of its own
# with only the agent's dependencies (the collector never runs there).
AGENT_PYTHONS=(3.9 3.10)

find_exact_python() {   # find_exact_python 3.9 -> a path to a working python3.9
  local v="$1" candidate
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/"python$v" \
                   "/usr/bin/python$v" "/usr/local/bin/python$v" \
                   "$(command -v "python$v" 2>/dev/null || true)"; do
    # a pyenv shim exists even where that version is not selected: run it to be sure
    if [ -n "$candidate" ] && [ -x "$candidate" ] &&
       "$candidate" -c "import sys; sys.exit('%d.%d' % sys.version_info[:2] != '$v')" \
         2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

agent_venv() { echo "$REPO/.venv-py${1//./}"; }

ensure_agent_venv() {   # ensure_agent_venv 3.9: returns 1 when there is no such Python
  local v="$1" venv py stamp want requirements
  venv="$(agent_venv "$v")"
  py="$(find_exact_python "$v")" || return 1
  requirements="$("$PY" -c 'import sys; sys.path.insert(0, "deploy/packaging"); import build
print("\n".join(build.agent_requirements()))')"
  want="$(printf '%s\n%s\n' "$requirements" "$(sha256sum "$REPO/pyproject.toml")" |
          sha256sum | cut -c1-16)"
  stamp="$venv/.sisguard-installed"
  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  say "setting up $venv for the agent's tests on Python $v (once)"
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $requirements \
    pytest pytest-timeout hypothesis mypy types-pyyaml types-psutil types-protobuf grpc-stubs
  # the agent from this checkout, as an editable install would (the project as a whole
  # needs 3.11, so pip cannot install it here)
  "$venv/bin/python" -c 'import sys, sysconfig; print(sysconfig.get_paths()["purelib"])' |
    { read -r site; printf '%s
%s
' "$REPO" "$REPO/proto" > "$site/sisguard-agent-dev.pth"; }
  echo "$want" > "$stamp"
}
