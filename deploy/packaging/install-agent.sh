#!/usr/bin/env bash
# Install, enroll and start the sisguard agent on this server, offline, in one command.
#
#   sudo ./install-agent.sh --collector HOST:PORT --token-file FILE --ca-fingerprint sha256:...
#
# From the bundle (sisguard-agent-<version>.tar.gz) or from the .deb/.rpm (then it lives in
# /opt/sisguard/agent/). Nothing is downloaded: the wheels beside this script are installed
# into a private virtual environment (/opt/sisguard/agent/venv) of this server's own
# Python 3.9 or later.
#
# Options:
#   --collector HOST:PORT   a collector's events port (repeatable: failover in that order)
#   --token-file FILE       the enrollment token from 'sisguard-collector token create'
#                           ('-' reads it from standard input); never give it on the command line
#   --ca-fingerprint FP     sha256:... printed by 'sisguard-collector init'
#   --hostname NAME         the name to enroll under (default: this host's name)
#   --python PY             the interpreter for the virtual environment
#   --root DIR              install everything under DIR and do not call systemctl
#                           (tests and images)
#   --no-start              install (and enroll) but do not start the service
#   --uninstall             remove the program and its service; keep config, identity, spool
#   --purge                 with --uninstall: also remove /etc/sisguard/agent.yml and
#                           /var/lib/sisguard-agent (identity, spool, baseline)
#
# Re-running it upgrades in place: a new virtual environment is switched in atomically and
# the identity, spool, baseline and config are kept.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=install-common.sh
source "$HERE/install-common.sh"

ROOT="" COLLECTORS=() TOKEN_FILE="" FINGERPRINT="" HOSTNAME_ARG="" PYTHON=""
START=1 UNINSTALL=0 PURGE=0 PACKAGE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --collector) COLLECTORS+=("$2"); shift 2 ;;
    --token-file) TOKEN_FILE="$2"; shift 2 ;;
    --ca-fingerprint) FINGERPRINT="$2"; shift 2 ;;
    --hostname) HOSTNAME_ARG="$2"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --root) ROOT="$(mkdir -p "$2" && cd "$2" && pwd)"; shift 2 ;;
    --no-start) START=0; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    --package) PACKAGE=1; shift ;;   # the .deb/.rpm post-install step
    --token) die "--token would show the token in the process list: use --token-file FILE" ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
done
[ "$ROOT" = / ] && ROOT=""
[ "$(id -u)" = 0 ] || [ -n "$ROOT" ] || die "run it as root (sudo), or with --root DIR"

HOME_DIR="$ROOT/opt/sisguard/agent"
CONFIG="$ROOT/etc/sisguard/agent.yml"
STATE="$ROOT/var/lib/sisguard-agent"
UNIT_DIR="$ROOT/etc/systemd/system"
LINK="$ROOT/usr/local/bin/sisguard-agent"
VERSION="$(cat "$HERE/VERSION")"

systemd_here() { [ -z "$ROOT" ] && have_systemd; }

packaged() {   # installed by dpkg or rpm (then removal goes through the package manager)
  [ -z "$ROOT" ] && { dpkg -S /opt/sisguard/agent/install-agent.sh >/dev/null 2>&1 ||
                      rpm -qf /opt/sisguard/agent/install-agent.sh >/dev/null 2>&1; }
}

if [ "$UNINSTALL" = 1 ]; then
  if packaged && [ "$PACKAGE" = 0 ]; then
    die "installed from a package: remove it with 'apt remove sisguard-agent' ('apt purge' to \
also drop config and state) or 'dnf remove sisguard-agent'"
  fi
  if systemd_here; then
    systemctl disable --now sisguard-agent >/dev/null 2>&1 || true
  fi
  rm -f "$UNIT_DIR/sisguard-agent.service" "$LINK"
  systemd_here && systemctl daemon-reload || true
  rm -rf "${HOME_DIR:?}"
  if [ "$PURGE" = 1 ]; then
    rm -rf "$STATE" "$CONFIG"
    rmdir "$ROOT/etc/sisguard" 2>/dev/null || true
    say "removed the agent, its config and its state (identity, spool, baseline)"
  else
    say "removed the agent; kept $CONFIG and $STATE (--purge removes them)"
  fi
  exit 0
fi

# 1. The program: files beside this script, copied to /opt/sisguard/agent unless already there.
mkdir -p "$HOME_DIR"
if [ "$HERE" != "$(cd "$HOME_DIR" && pwd)" ]; then
  # this machine's wheels only (the bundle carries every architecture)
  rm -rf "$HOME_DIR/wheels" && mkdir -p "$HOME_DIR/wheels"
  for wheel in "$HERE"/wheels/*.whl; do
    case "$wheel" in
      *_x86_64.whl|*_aarch64.whl) case "$wheel" in *"_$(uname -m).whl") ;; *) continue ;; esac ;;
    esac
    cp "$wheel" "$HOME_DIR/wheels/"
  done
  cp "$HERE/install-agent.sh" "$HERE/install-common.sh" "$HERE/VERSION" \
     "$HERE/sisguard-agent.service" "$HERE/agent.yml" "$HOME_DIR/"
fi
chmod 0755 "$HOME_DIR"
installed="$(cat "$HOME_DIR/venv/.sisguard-version" 2>/dev/null || true)"
if [ "$installed" = "$VERSION" ] && [ -x "$HOME_DIR/venv/bin/sisguard-agent" ]; then
  say "sisguard-agent $VERSION is installed already"
else
  make_venv "${PYTHON:-$(find_python 9)}" "$HOME_DIR/wheels" "$HOME_DIR" "sisguard-agent==${VERSION%-*}"
  echo "$VERSION" > "$HOME_DIR/venv/.sisguard-version"
  say "installed sisguard-agent $VERSION${installed:+ (was $installed)}"
fi
AGENT="$HOME_DIR/venv/bin/sisguard-agent"

# 2. Config (kept on upgrade), state directory (0700), unit and command.
mkdir -p "$(dirname "$CONFIG")" "$STATE"
chmod 0700 "$STATE"
if [ ! -e "$CONFIG" ]; then
  install -m 0600 "$HOME_DIR/agent.yml" "$CONFIG"
  say "wrote $CONFIG (edit the watched paths)"
fi
if [ "$PACKAGE" = 0 ]; then
  mkdir -p "$UNIT_DIR" "$(dirname "$LINK")"
  install -m 0644 "$HOME_DIR/sisguard-agent.service" "$UNIT_DIR/sisguard-agent.service"
  ln -sfn "/opt/sisguard/agent/venv/bin/sisguard-agent" "$LINK"
fi

# 3. Enrollment: once; an existing identity is kept.
if [ -f "$STATE/identity.json" ]; then
  say "already enrolled ($(sed -n 's/.*"agent_id": *"\([^"]*\)".*/\1/p' "$STATE/identity.json" \
      | head -n 1)); identity kept"
elif [ ${#COLLECTORS[@]} -gt 0 ]; then
  [ -n "$TOKEN_FILE" ] || die "--token-file is needed to enroll"
  [ -n "$FINGERPRINT" ] || die "--ca-fingerprint is needed to enroll"
  args=(enroll --token-file "$TOKEN_FILE" --ca-fingerprint "$FINGERPRINT" --state-dir "$STATE")
  for c in "${COLLECTORS[@]}"; do args+=(--collector "$c"); done
  [ -n "$HOSTNAME_ARG" ] && args+=(--hostname "$HOSTNAME_ARG")
  "$AGENT" "${args[@]}" || die "enrollment failed (see the line above)"
else
  say "not enrolled yet: re-run with --collector HOST:PORT --token-file FILE --ca-fingerprint FP"
  START=0
fi

# 4. The service.
if systemd_here; then
  systemctl daemon-reload
  if [ "$START" = 1 ]; then
    systemctl enable sisguard-agent >/dev/null 2>&1
    systemctl restart sisguard-agent
    say "sisguard-agent is running: systemctl status sisguard-agent; sisguard-agent status"
  fi
elif [ "$START" = 1 ]; then
  say "no systemd here: start it with $AGENT run --config $CONFIG${ROOT:+ --state-dir $STATE}"
fi
