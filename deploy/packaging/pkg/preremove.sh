#!/bin/sh
# sisguard-@PRODUCT@ package: before removal (deb: remove/upgrade/...; rpm: 0 = erase,
# 1 = upgrade). Stops the service only when the package goes away, not on upgrade.
set -e
case "$1" in
  remove|0)
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
      systemctl disable --now sisguard-@PRODUCT@ >/dev/null 2>&1 || true
    fi
    ;;
esac
