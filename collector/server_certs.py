"""The certificates the collector serves, reloaded without a restart.

gRPC asks ``fetch()`` before every new TLS handshake. It stats the PKI files (a few
microseconds) and returns a new configuration only when they changed and hold a key
that matches its certificate (a half-replaced pair is not served). When the served
certificate comes within ``renew_before`` of its expiry, the first handshake after
that re-issues it from the CA (``ensure_server_certificate``): a collector that runs
for years keeps a valid certificate without a restart.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from collector.pki import CertificateAuthority, PkiError
from collector.renewal import ensure_server_certificate
from common.errors import SisguardError
from common.logs import get_logger

log = get_logger("sisguard.collector.server_certs")
FILES = ("server.key", "server.crt", "ca.crt")


class LiveServerCertificates:
    def __init__(self, pki_dir: Path, *, ca: CertificateAuthority | None = None,
                 renew_before: dt.timedelta = dt.timedelta(days=30)) -> None:
        self.pki_dir = pki_dir
        self.ca = ca
        self.renew_before = renew_before
        self._lock = threading.Lock()
        self._stamp = self._files_stamp()
        loaded = self._load()
        if loaded is None:
            raise SisguardError(f"{pki_dir}: server.key does not match server.crt: "
                                "run 'sisguard-collector init' again")
        self._config, self._renew_at = loaded
        self.reloads = 0

    def credentials(self, *, require_client_cert: bool) -> grpc.ServerCredentials:
        # the stub types the fetcher as never returning None; gRPC documents None as
        # "keep the current configuration"
        return grpc.dynamic_ssl_server_credentials(
            self._config, self.fetch,  # type: ignore[arg-type]
            require_client_authentication=require_client_cert)

    def _files_stamp(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for name in FILES:
            try:
                st = os.stat(self.pki_dir / name)
            except OSError:
                return ()
            stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stamps)

    def _load(self) -> tuple[grpc.ServerCertificateConfiguration, float] | None:
        try:
            key = (self.pki_dir / "server.key").read_bytes()
            crt = (self.pki_dir / "server.crt").read_bytes()
            ca = (self.pki_dir / "ca.crt").read_bytes()
            cert = x509.load_pem_x509_certificate(crt)
            private = serialization.load_pem_private_key(key, None)
        except FileNotFoundError as e:
            raise SisguardError(f"{e.filename}: missing: run 'sisguard-collector init' "
                                "first") from e
        except (OSError, ValueError, TypeError) as e:
            log.error("server certificate not loaded; the current one stays",
                      pki_dir=str(self.pki_dir), error=str(e))
            return None
        if private.public_key() != cert.public_key():
            return None
        renew_at = (cert.not_valid_after_utc - self.renew_before).timestamp()
        config = grpc.ssl_server_certificate_configuration([(key, crt + ca)],
                                                           root_certificates=ca)
        return config, renew_at

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each handshake: None keeps the current configuration."""
        try:
            return self._fetch()
        except Exception:  # an exception here would fail the handshake: keep serving
            log.exception("server certificate check failed; the current one stays")
            return None

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        now = dt.datetime.now(dt.UTC).timestamp()
        if self._files_stamp() == self._stamp and now < self._renew_at:
            return None
        with self._lock:
            changed = self._reload_if_changed()
            if now >= self._renew_at and self.ca is not None:
                try:
                    ensure_server_certificate(self.pki_dir, self.ca,
                                              renew_before=self.renew_before)
                except PkiError as e:
                    log.error("server certificate not re-issued", error=str(e))
                changed = self._reload_if_changed() or changed
                if now >= self._renew_at:
                    self._renew_at = now + 3600.0   # failed: try again in an hour
            return self._config if changed else None

    def _reload_if_changed(self) -> bool:
        stamp = self._files_stamp()
        if stamp == self._stamp:
            return False
        loaded = self._load()
        if loaded is None:
            return False       # mid-replacement: the next handshake looks again
        self._stamp = stamp
        self._config, self._renew_at = loaded
        self.reloads += 1
        log.info("server certificate reloaded", pki_dir=str(self.pki_dir))
        return True
