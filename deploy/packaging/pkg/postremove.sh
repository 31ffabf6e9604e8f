#!/bin/sh
# sisguard-@PRODUCT@ package: after removal (deb: remove/purge/upgrade; rpm: 0 = erase,
# 1 = upgrade). The virtual environment is not a packaged file: remove it here. Config and
# state stay unless purged (deb "purge"; on rpm, remove /var/lib/sisguard-@PRODUCT@ by hand).
set -e
case "$1" in
  remove|purge|0)
    rm -rf /opt/sisguard/@PRODUCT@/venv /opt/sisguard/@PRODUCT@/venv-*
    rmdir /opt/sisguard/@PRODUCT@ /opt/sisguard 2>/dev/null || true
    ;;
esac
if [ "$1" = purge ]; then
  rm -rf /var/lib/sisguard-@PRODUCT@
  rm -f /etc/sisguard/@PRODUCT@.yml
  rmdir /etc/sisguard 2>/dev/null || true
fi
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
