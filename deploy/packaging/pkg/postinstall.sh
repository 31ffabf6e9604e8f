#!/bin/sh
# sisguard-@PRODUCT@ package: after install or upgrade (deb: "configure"; rpm: 1 or 2).
# Builds (or refreshes) the private virtual environment from the packaged wheels and, when
# the service is set up already, restarts it on the new version.
set -e
/opt/sisguard/@PRODUCT@/install-@PRODUCT@.sh --package
