#!/usr/bin/env bash
# Install (and initialise, the first time) the sisguard collector on this server, offline.
#
#   sudo ./install-collector.sh --name collector.tinh.gov.vn --name 10.0.0.5
#
# From the bundle (sisguard-collector-<version>.tar.gz) or from the .deb/.rpm (then it lives
# in /opt/sisguard/collector/). The wheels beside this script go into a private virtual
# environment (/opt/sisguard/collector/venv) of this server's Python 3.11 or later; the
# shipped rules into /opt/sisguard/collector/rules.
#
# Options:
#   --name NAME      a DNS name or IP the agents use for this collector (repeatable; used by
#                    'init' the first time: default this host's name)
#   --listen H:P     the events port for 'init' (default 0.0.0.0:4443; enrollment is P+1)
#   --ca-from DIR    initialise with another collector's CA (scale-out; see README)
#   --python PY      the interpreter for the virtual environment
#   --root DIR       install everything under DIR and do not call systemctl or useradd
#   --no-start       install but do not start the service
#   --uninstall      remove the program and its service; keep config and data
#   --purge          with --uninstall: also remove /etc/sisguard/collector.yml and
#                    /var/lib/sisguard-collector (CA, tokens, agents, archive)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=install-common.sh
source "$HERE/install-common.sh"

ROOT="" NAMES=() LISTEN="0.0.0.0:4443" CA_FROM="" PYTHON="" START=1 UNINSTALL=0 PURGE=0
PACKAGE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAMES+=("$2"); shift 2 ;;
    --listen) LISTEN="$2"; shift 2 ;;
    --ca-from) CA_FROM="$2"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --root) ROOT="$(mkdir -p "$2" && cd "$2" && pwd)"; shift 2 ;;
    --no-start) START=0; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    --package) PACKAGE=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
done
[ "$ROOT" = / ] && ROOT=""
[ "$(id -u)" = 0 ] || [ -n "$ROOT" ] || die "run it as root (sudo), or with --root DIR"

HOME_DIR="$ROOT/opt/sisguard/collector"
CONFIG="$ROOT/etc/sisguard/collector.yml"
DATA="$ROOT/var/lib/sisguard-collector"
UNIT_DIR="$ROOT/etc/systemd/system"
LINK_DIR="$ROOT/usr/local/bin"
VERSION="$(cat "$HERE/VERSION")"
systemd_here() { [ -z "$ROOT" ] && have_systemd; }
as_service_user() {   # run a command as the collector's user (root under --root)
  if [ -z "$ROOT" ] && id sisguard >/dev/null 2>&1; then
    setpriv --reuid=sisguard --regid=sisguard --init-groups -- "$@"
  else
    "$@"
  fi
}

if [ "$UNINSTALL" = 1 ]; then
  if systemd_here; then systemctl disable --now sisguard-collector >/dev/null 2>&1 || true; fi
  rm -f "$UNIT_DIR/sisguard-collector.service" "$LINK_DIR/sisguard-collector" \
        "$LINK_DIR/sisguard-rules"
  systemd_here && systemctl daemon-reload || true
  rm -rf "${HOME_DIR:?}"
  if [ "$PURGE" = 1 ]; then
    rm -rf "$DATA" "$CONFIG"
    rmdir "$ROOT/etc/sisguard" 2>/dev/null || true
    say "removed the collector, its config and its data"
  else
    say "removed the collector; kept $CONFIG and $DATA (--purge removes them)"
  fi
  exit 0
fi

mkdir -p "$HOME_DIR"
if [ "$HERE" != "$(cd "$HOME_DIR" && pwd)" ]; then
  rm -rf "$HOME_DIR/wheels" "$HOME_DIR/rules" && mkdir -p "$HOME_DIR/wheels"
  cp -r "$HERE/rules" "$HOME_DIR/"
  for wheel in "$HERE"/wheels/*.whl; do   # this machine's architecture only
    case "$wheel" in
      *_x86_64.whl|*_aarch64.whl) case "$wheel" in *"_$(uname -m).whl") ;; *) continue ;; esac ;;
    esac
    cp "$wheel" "$HOME_DIR/wheels/"
  done
  cp "$HERE/install-collector.sh" "$HERE/install-common.sh" "$HERE/VERSION" \
     "$HERE/sisguard-collector.service" "$HERE/collector.yml" "$HOME_DIR/"
fi
installed="$(cat "$HOME_DIR/venv/.sisguard-version" 2>/dev/null || true)"
if [ "$installed" = "$VERSION" ] && [ -x "$HOME_DIR/venv/bin/sisguard-collector" ]; then
  say "sisguard-collector $VERSION is installed already"
else
  make_venv "${PYTHON:-$(find_python 11)}" "$HOME_DIR/wheels" "$HOME_DIR" "sisguard==${VERSION%-*}"
  echo "$VERSION" > "$HOME_DIR/venv/.sisguard-version"
  say "installed sisguard-collector $VERSION${installed:+ (was $installed)}"
fi
COLLECTOR="$HOME_DIR/venv/bin/sisguard-collector"

if [ -z "$ROOT" ] && ! id sisguard >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/sisguard-collector --shell /usr/sbin/nologin sisguard
fi
mkdir -p "$(dirname "$CONFIG")" "$DATA"
chmod 0700 "$DATA"
[ -z "$ROOT" ] && chown sisguard:sisguard "$DATA"
if [ ! -e "$CONFIG" ]; then
  install -m 0640 "$HOME_DIR/collector.yml" "$CONFIG"
  [ -z "$ROOT" ] && chgrp sisguard "$CONFIG"
  say "wrote $CONFIG (set elasticsearch.url, or keep the JSONL archive)"
fi
if [ "$PACKAGE" = 0 ]; then
  mkdir -p "$UNIT_DIR" "$LINK_DIR"
  install -m 0644 "$HOME_DIR/sisguard-collector.service" "$UNIT_DIR/sisguard-collector.service"
  ln -sfn /opt/sisguard/collector/venv/bin/sisguard-collector "$LINK_DIR/sisguard-collector"
  ln -sfn /opt/sisguard/collector/venv/bin/sisguard-rules "$LINK_DIR/sisguard-rules"
fi

if [ ! -f "$DATA/pki/ca.crt" ] && [ "$PACKAGE" = 0 ]; then
  [ ${#NAMES[@]} -gt 0 ] || NAMES=("$(hostname -f 2>/dev/null || hostname)")
  args=(init --data-dir "$DATA" --listen "$LISTEN")
  for n in "${NAMES[@]}"; do args+=(--name "$n"); done
  [ -n "$CA_FROM" ] && args+=(--ca-from "$CA_FROM")
  as_service_user "$COLLECTOR" "${args[@]}"
elif [ -f "$DATA/pki/ca.crt" ]; then
  say "initialised already: CA and server certificate kept"
else
  say "not initialised yet: sudo -u sisguard $COLLECTOR init --data-dir $DATA --name NAME"
  START=0
fi

if systemd_here; then
  systemctl daemon-reload
  if [ "$START" = 1 ]; then
    systemctl enable sisguard-collector >/dev/null 2>&1
    systemctl restart sisguard-collector
    say "sisguard-collector is running: systemctl status sisguard-collector"
  fi
elif [ "$START" = 1 ]; then
  say "no systemd here: start it with $COLLECTOR run --config $CONFIG"
fi
