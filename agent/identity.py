"""What enrollment leaves in the agent's state directory.

``agent.key`` (0600, made here, never leaves the host), ``agent.crt``, ``ca.crt`` and
``identity.json`` (agent id, organization, collector addresses, CA fingerprint).
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
        try:
            return cls(p["agent.key"].read_bytes(), p["agent.crt"].read_bytes(),
                       p["ca.crt"].read_bytes())
        except FileNotFoundError as e:
            raise NotEnrolled(f"{e.filename}: missing: run 'sisguard-agent enroll'") from e
