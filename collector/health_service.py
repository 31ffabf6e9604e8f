"""The standard gRPC health service (``grpc.health.v1.Health``) on both ports.

``Check`` answers SERVING while the collector can store what agents send, NOT_SERVING
while an output is in an outage (batches are then not acked: agents keep their events)
or while the collector stops. It is asked at each call, so it is never stale. The
service names are ``""`` (the whole server) and ``sisguard.v1.Ingest``; any other is
NOT_FOUND.

``Watch`` is refused (UNIMPLEMENTED): a watch is a call that never ends, and each one
would hold a handler thread and an RPC slot of the port's fixed budget. On the
enrollment port (server TLS, no client certificate) that budget is small and open to
anyone; on the events port a rogue agent could hold slots meant for event streams.
Load balancers and ``grpc_health_probe`` use ``Check``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICES = ("", "sisguard.v1.Ingest")
Status = health_pb2.HealthCheckResponse


class StorageHealth(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    def __init__(self, serving: Callable[[], bool]) -> None:
        self.serving = serving

    def Check(self, request: health_pb2.HealthCheckRequest,
              context: grpc.ServicerContext) -> health_pb2.HealthCheckResponse:
        if request.service not in SERVICES:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service[:100]!r}")
        try:
            up = self.serving()
        except Exception:   # a broken probe says "not serving", never crashes the call
            up = False
        return health_pb2.HealthCheckResponse(
            status=Status.SERVING if up else Status.NOT_SERVING)

    def Watch(self, request: health_pb2.HealthCheckRequest,
              context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      "Watch is not served (it would hold a handler thread): use Check")


def add_health(server: grpc.Server, health: StorageHealth) -> None:
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
