"""The Enrollment service: token + CSR -> a certificate naming the agent id."""

from __future__ import annotations

import grpc

from collector.pki import CertificateAuthority, PkiError, pem
from collector.store import Store, TokenRefused
from common.logs import get_logger
from sisguard.v1 import sisguard_pb2 as pb
from sisguard.v1 import sisguard_pb2_grpc as pb_grpc

log = get_logger("sisguard.collector.enroll")


class EnrollmentService(pb_grpc.EnrollmentServicer):
    def __init__(self, *, store: Store, ca: CertificateAuthority) -> None:
        self.store = store
        self.ca = ca

    def Enroll(self, request: pb.EnrollRequest,
               context: grpc.ServicerContext) -> pb.EnrollResponse:
        hostname = request.hostname.strip()[:255]
        if not hostname:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "hostname is required")
        try:
            # check the CSR before the token is used up
            self.ca.sign_agent(request.csr_pem, "probe")
            organization = self.store.redeem_token(request.token)
        except TokenRefused as e:
            log.warning("enrollment refused", peer=context.peer(), reason=str(e))
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        except PkiError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        agent_id = self.store.add_agent(hostname=hostname, organization=organization,
                                        version=request.agent_version, os=request.os,
                                        serial="")
        cert = self.ca.sign_agent(request.csr_pem, agent_id, hostname=hostname,
                                  organization=organization)
        self.store.set_serial(agent_id, format(cert.serial_number, "x"))
        log.info("agent enrolled", agent_id=agent_id, hostname=hostname,
                 organization=organization, peer=context.peer())
        return pb.EnrollResponse(agent_id=agent_id, certificate_pem=pem(cert),
                                 ca_pem=self.ca.cert_pem, organization=organization)
