"""gRPC's standard health service (`grpc.health.v1.Health`; its messages and service stubs from
grpcio-health-checking) beside the inference service on `--grpc-port`, for what probes gRPC the
standard way: Kubernetes' `grpc:` probes, grpc-health-probe, load balancers' health checks.

Its status is readiness, as Triton's is: SERVING once every model is loaded and warmed up
(REST's /v2/health/ready = 200), NOT_SERVING before that and from the start of shutdown on,
for the whole server ("") and for "inference.GRPCInferenceService"; another service name is
NOT_FOUND (Check) or SERVICE_UNKNOWN (Watch), as the protocol says. Liveness stays REST's
/v2/health/live or the inference service's ServerLive: a liveness probe on readiness would
kill a pod still warming up.

Readiness is a property the loader thread flips, so `start()` polls it (a boolean every
POLL_S) to wake Watch streams on a change; Check reads it on the spot. The library's own
servicer is not used: its Watch streams never end, so each would hold a shutdown for its whole
grace period; here they end once NOT_SERVING is sent at shutdown.
"""
from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICES = ("", "inference.GRPCInferenceService")
POLL_S = 0.25
_Status = health_pb2.HealthCheckResponse
SERVING, NOT_SERVING, SERVICE_UNKNOWN = _Status.SERVING, _Status.NOT_SERVING, _Status.SERVICE_UNKNOWN


class ReadinessHealth(health_pb2_grpc.HealthServicer):
    def __init__(self, service) -> None:
        self.service = service
        self._status = NOT_SERVING
        self._changed = asyncio.Event()    # set (and replaced) on every change of _status
        self._shutting_down = False
        self._follower: asyncio.Task | None = None

    def _refresh(self) -> None:
        status = SERVING if self.service.ready and not self._shutting_down else NOT_SERVING
        if status != self._status:
            self._status = status
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def Check(self, request, context):
        self._refresh()
        if request.service not in SERVICES:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"unknown service {request.service!r}; expected one of {list(SERVICES)}")
        return health_pb2.HealthCheckResponse(status=self._status)

    async def Watch(self, request, context):
        """The status now, then each change; after shutdown's NOT_SERVING the stream ends."""
        sent = None
        while True:
            changed = self._changed          # taken before reading: a change after it wakes us
            status = self._status if request.service in SERVICES else SERVICE_UNKNOWN
            if status != sent:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                sent = status
            if self._shutting_down:
                return
            await changed.wait()

    def start(self) -> None:
        """Follow readiness on the running loop until shutdown."""
        async def follow():
            while True:
                self._refresh()
                await asyncio.sleep(POLL_S)

        self._follower = asyncio.ensure_future(follow())

    def shut_down(self) -> None:
        """NOT_SERVING for good; Watch streams are told and end (the first step of stopping)."""
        self._shutting_down = True
        if self._follower is not None:
            self._follower.cancel()
        self._refresh()
        self._wake()                         # streams already at NOT_SERVING end too


def add_health(service, server) -> ReadinessHealth:
    servicer = ReadinessHealth(service)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer
