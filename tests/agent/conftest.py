"""The agent's tests also run on Python 3.9 and 3.10 (scripts/test). Two of them sign
certificates with the collector's CA (``collector.pki``, Python 3.11+): on the older
Pythons they are not collected; they run on the main interpreter, and the renewal they
test also runs end to end in tests/e2e/test_renewal.py."""

from __future__ import annotations

import sys

collect_ignore = ([] if sys.version_info >= (3, 11)
                  else ["test_renewal.py", "test_identity.py"])
