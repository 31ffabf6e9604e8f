# Shared by install-agent.sh and install-collector.sh (sourced, never run).
# shellcheck shell=bash

say() { printf 'sisguard: %s\n' "$*" >&2; }
die() { printf 'sisguard: error: %s\n' "$*" >&2; exit 1; }

# The first Python on this server that is new enough: $1 = minimum minor version of 3.x.
find_python() {
  local minimum="$1" candidate
  for candidate in ${SISGUARD_PYTHON:-} python3 python3.13 python3.12 python3.11 python3.10 \
                   python3.9; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, $minimum))" \
        2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  die "no Python 3.$minimum or later with the venv module (Debian/Ubuntu: apt install python3-venv)"
}

# A fresh virtual environment from the wheels beside the installer, then an atomic switch:
#   make_venv PYTHON WHEELS_DIR HOME_DIR REQUIREMENT
# HOME_DIR/venv is a symlink to HOME_DIR/venv-<stamp>; the previous one is removed after the
# switch, so a failed upgrade leaves the running version in place.
make_venv() {
  local python="$1" wheels="$2" home="$3" requirement="$4" stamp target old
  stamp="$(date +%Y%m%d%H%M%S)-$$"
  target="$home/venv-$stamp"
  mkdir -p "$home"
  old="$(readlink "$home/venv" 2>/dev/null || true)"
  say "creating the virtual environment $target with $("$python" -V 2>&1)"
  "$python" -m venv "$target" || die "cannot create a virtual environment with $python"
  # Never PyPI: only the wheels that came with this bundle or package.
  if ! "$target/bin/python" -m pip install --quiet --no-index --find-links "$wheels" \
       --disable-pip-version-check "$requirement"; then
    rm -rf "$target"
    die "pip could not install $requirement from $wheels (is this Python/architecture in the bundle?)"
  fi
  ln -sfn "$(basename "$target")" "$home/venv.new"
  mv -T "$home/venv.new" "$home/venv"
  if [ -n "$old" ] && [ "$old" != "$(basename "$target")" ]; then
    rm -rf "${home:?}/$old"
  fi
}

have_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }
