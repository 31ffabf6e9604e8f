"""What enrollment leaves in the agent's state directory.

``agent.key`` (0600, made here, never leaves the host), ``agent.crt``, ``ca.crt`` and
``identity.json`` (agent id, organization, collector addresses, CA fingerprint).

A renewal replaces key and certificate: both are written beside as ``*.new`` and made
durable, then the key is renamed into place, then the certificate. ``Credentials.load``
finishes or undoes a renewal that a crash interrupted: never a key without its cert.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from common.errors import SisguardError


class NotEnrolled(SisguardError):
    """The state directory holds no enrollment."""


@dataclass(frozen=True)
class Identity:
    agent_id: str
    organization: str
    collectors: tuple[str, ...]
    ca_fingerprint: str

    @staticmethod
    def paths(state_dir: Path) -> dict[str, Path]:
        return {name: state_dir / name
                for name in ("agent.key", "agent.crt", "ca.crt", "identity.json")}

    def save(self, state_dir: Path) -> None:
        data = asdict(self)
        data["collectors"] = list(self.collectors)
        tmp = state_dir / "identity.json.tmp"
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, state_dir / "identity.json")

    @classmethod
    def load(cls, state_dir: Path) -> Identity:
        path = state_dir / "identity.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotEnrolled(f"{state_dir}: not enrolled: run 'sisguard-agent enroll'") from None
        except (OSError, ValueError) as e:
            raise SisguardError(f"{path}: unreadable: {e}") from e
        return cls(agent_id=data["agent_id"], organization=data.get("organization", ""),
                   collectors=tuple(data["collectors"]),
                   ca_fingerprint=data.get("ca_fingerprint", ""))


@dataclass(frozen=True)
class Credentials:
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes

    @classmethod
    def load(cls, state_dir: Path) -> Credentials:
        p = Identity.paths(state_dir)
        _recover_renewal(state_dir)
        try:
            return cls(p["agent.key"].read_bytes(), p["agent.crt"].read_bytes(),
                       p["ca.crt"].read_bytes())
        except FileNotFoundError as e:
            raise NotEnrolled(f"{e.filename}: missing: run 'sisguard-agent enroll'") from e

    def replace(self, state_dir: Path, *, key_pem: bytes, cert_pem: bytes) -> Credentials:
        """Atomically put a renewed key and certificate in place (both 0600)."""
        p = Identity.paths(state_dir)
        for name, data in (("agent.key", key_pem), ("agent.crt", cert_pem)):
            _write_durable(p[name].with_name(name + ".new"), data)
        _fsync_dir(state_dir)
        os.replace(p["agent.key"].with_name("agent.key.new"), p["agent.key"])
        os.replace(p["agent.crt"].with_name("agent.crt.new"), p["agent.crt"])
        _fsync_dir(state_dir)
        return Credentials(key_pem, cert_pem, self.ca_pem)


def _write_durable(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _recover_renewal(state_dir: Path) -> None:
    """After a crash in ``Credentials.replace``: if the key was renamed but not the
    certificate, rename the certificate too; if neither, drop the half-written pair."""
    key_new, crt_new = state_dir / "agent.key.new", state_dir / "agent.crt.new"
    if key_new.exists():           # crashed before the key was renamed: keep the old pair
        key_new.unlink()
        crt_new.unlink(missing_ok=True)
    elif crt_new.exists():         # the new key is in place: its certificate follows
        os.replace(crt_new, state_dir / "agent.crt")
        _fsync_dir(state_dir)
