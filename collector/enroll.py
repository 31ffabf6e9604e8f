"""The Enrollment service: token + CSR -> a certificate naming the agent id.

Anyone who reaches the port may call it, so it spends as little as it can on strangers:
the call is admitted per source address (``admission.EnrollGate``) before its request is
read, a request that does not arrive within the deadline gets the call cancelled, and
nothing is signed until the token has been checked and redeemed. A CSR is checked (parsed
and its signature verified, nothing signed) before the token is redeemed, so a bad CSR
does not use up a token.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from collector.admission import DeadlineWatch, EnrollGate
from collector.pki import CertificateAuthority, PkiError, pem
from collector.store import Store, TokenRefused
from common.logs import get_logger
from sisguard.v1 import sisguard_pb2 as pb

log = get_logger("sisguard.collector.enroll")

SERVICE = "sisguard.v1.Enrollment"
MAX_CSR_BYTES = 16 * 1024


def check_csr(csr_pem: bytes) -> None:
    """Raise PkiError unless the CSR is one we would sign (no signing here)."""
    if len(csr_pem) > MAX_CSR_BYTES:
        raise PkiError(f"the CSR is {len(csr_pem)} bytes, over the limit of {MAX_CSR_BYTES}")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as e:
        raise PkiError(f"the CSR is not valid PEM: {e}") from e
    if not csr.is_signature_valid:
        raise PkiError("the CSR's signature does not verify")
    if not isinstance(csr.public_key(), ec.EllipticCurvePublicKey):
        raise PkiError("the CSR's key must be an EC key (P-256)")


class EnrollmentService:
    """``deadline`` for a call to send its request; ``pressure_deadline`` instead once
    ``pressure_at`` calls are already waiting for theirs (each holds a thread): a prompt
    client's request has arrived with its headers, a slow-loris call is let go quickly."""

    def __init__(self, *, store: Store, ca: CertificateAuthority, gate: EnrollGate,
                 watch: DeadlineWatch, deadline: float, pressure_deadline: float | None = None,
                 pressure_at: int = 2) -> None:
        self.store = store
        self.ca = ca
        self.gate = gate
        self.watch = watch
        self.deadline = deadline
        self.pressure_deadline = deadline if pressure_deadline is None else pressure_deadline
        self.pressure_at = pressure_at
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self.signed = 0
        self.under_pressure = 0   # calls given the short deadline

    def handler(self) -> grpc.GenericRpcHandler[pb.EnrollRequest, pb.EnrollResponse]:
        """Enroll registered as client-streaming: the wire is the same as unary, but our
        code runs before the request is read, so a caller that never sends it can be
        refused (per address) or cancelled (deadline) instead of holding a thread."""
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Enroll": grpc.stream_unary_rpc_method_handler(
                self._call, request_deserializer=pb.EnrollRequest.FromString,
                response_serializer=pb.EnrollResponse.SerializeToString),
        })

    def _call(self, requests: Iterator[pb.EnrollRequest],
              context: grpc.ServicerContext) -> pb.EnrollResponse:
        peer = context.peer()
        lease = self.gate.admit(peer)
        if isinstance(lease, str):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, lease)
            raise AssertionError("abort returned")  # pragma: no cover
        try:
            with self._waiting_lock:
                pressed = self._waiting >= self.pressure_at
                self._waiting += 1
                self.under_pressure += pressed
            deadline = self.pressure_deadline if pressed else self.deadline
            ticket = self.watch.arm(deadline, context.cancel)
            try:
                request = next(requests, None)
            except grpc.RpcError:
                request = None
            finally:
                self.watch.disarm(ticket)
                with self._waiting_lock:
                    self._waiting -= 1
            if not context.is_active():
                self.gate.note_refused(peer, "no request within the deadline: cancelled")
                return pb.EnrollResponse()   # nobody is listening any more
            if request is None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              "an Enroll call carries exactly one request")
            assert request is not None
            return self.Enroll(request, context)
        finally:
            lease.release()

    def Enroll(self, request: pb.EnrollRequest,
               context: grpc.ServicerContext) -> pb.EnrollResponse:
        hostname = request.hostname.strip()[:255]
        if not hostname:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "hostname is required")
        peer = context.peer()
        try:
            check_csr(request.csr_pem)               # nothing signed, no token used
            organization = self.store.redeem_token(request.token)   # checked, then used
        except TokenRefused as e:
            self.gate.note_refused(peer, "enrollment token refused")
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        except PkiError as e:
            self.gate.note_refused(peer, "invalid CSR")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        agent_id = self.store.add_agent(hostname=hostname, organization=organization.name,
                                        organization_id=organization.id,
                                        version=request.agent_version[:64],
                                        os=request.os[:128], serial="")
        try:
            cert = self.ca.sign_agent(request.csr_pem, agent_id, hostname=hostname,
                                      organization=organization.name,
                                      organization_id=organization.id)
        except PkiError as e:   # checked above; kept so a change in pki cannot crash here
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        serial = format(cert.serial_number, "x")
        self.store.set_serial(agent_id, serial)
        self.signed += 1
        log.info("agent certificate signed", agent_id=agent_id, serial=serial,
                 hostname=hostname, organization=organization.name,
                 organization_id=organization.id, peer=peer)
        return pb.EnrollResponse(agent_id=agent_id, certificate_pem=pem(cert),
                                 ca_pem=self.ca.cert_pem, organization=organization.name)
