"""The gRPC health service cannot be turned against the ports it reports on.

The attacker is an unauthenticated network client on the enrollment port: a health
Watch is a call that never ends, and each one would hold one of the port's few handler
threads. Watch is refused; enrollment still works while the attacker keeps asking.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.harness import Agent, Collector

AgentFactory = Callable[..., Agent]


def test_watch_is_refused_and_enrollment_goes_on(collector: Collector,
                                                 agent_factory: AgentFactory) -> None:
    ca = (collector.data_dir / "pki" / "ca.crt").read_bytes()
    creds = grpc.ssl_channel_credentials(root_certificates=ca)   # no client certificate
    with grpc.secure_channel(f"127.0.0.1:{collector.port + 1}", creds) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        # more watches than the enrollment port has threads (4 by default)
        watches = [stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
                   for _ in range(12)]
        codes = set()
        for watch in watches:
            try:
                next(watch)
            except grpc.RpcError as e:
                codes.add(e.code())
        assert codes == {grpc.StatusCode.UNIMPLEMENTED}
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        agent = agent_factory(collector, "--sensors", "fim", "--watch",
                              str(collector.data_dir), start=False)
        assert agent.enroll(), "an agent enrolls while the attacker watches"
