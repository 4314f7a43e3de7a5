"""Build the grpc.aio server: our services, grpc.health.v1 and server reflection (v1 and v1alpha)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway._gen.telematics.v1 import (
    entitlements_pb2,
    entitlements_pb2_grpc,
    explain_pb2,
    explain_pb2_grpc,
    security_codes_pb2,
    security_codes_pb2_grpc,
    telemetry_pb2,
    vehicles_pb2,
    vehicles_pb2_grpc,
)
from gateway.api import telemetry as telemetry_api
from gateway.api.entitlements import EntitlementService
from gateway.api.explain import ExplainService
from gateway.api.limits import MAX_REQUEST_BYTES
from gateway.api.reflection_v1 import enable_reflection
from gateway.api.security_codes import SecurityCodeService
from gateway.api.telemetry import TelemetryService
from gateway.api.vehicles import VehicleService


@dataclass(frozen=True, slots=True)
class ServerTls:
    """PEM bytes of the server's certificate chain and key; a client CA turns on mutual TLS
    (clients without a certificate signed by it are refused in the handshake)."""

    cert_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


SERVICE_NAMES = (
    vehicles_pb2.DESCRIPTOR.services_by_name["VehicleService"].full_name,
    telemetry_pb2.DESCRIPTOR.services_by_name["TelemetryService"].full_name,
    explain_pb2.DESCRIPTOR.services_by_name["ExplainService"].full_name,
    entitlements_pb2.DESCRIPTOR.services_by_name["EntitlementService"].full_name,
    security_codes_pb2.DESCRIPTOR.services_by_name["SecurityCodeService"].full_name,
)


def build_server(
    *,
    listen: str,
    vehicles: VehicleService,
    telemetry: TelemetryService,
    explain: ExplainService,
    entitlements: EntitlementService,
    security_codes: SecurityCodeService,
    health_servicer: health.aio.HealthServicer,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    tls: ServerTls | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Return the server and the bound port (useful when `listen` asks for port 0).

    interceptors: the authentication check (gateway/api/auth.py). tls: None for plaintext
    (the configuration allows that on loopback only, gateway/config.py)."""
    # A request larger than any valid one is refused by gRPC (RESOURCE_EXHAUSTED) before it is
    # parsed; the field limits are checked per RPC (gateway/api/limits.py).
    server = grpc.aio.server(
        interceptors=list(interceptors),
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", MAX_REQUEST_BYTES)]
    )
    vehicles_pb2_grpc.add_VehicleServiceServicer_to_server(vehicles, server)
    telemetry_api.add_to_server(telemetry, server)  # sends pre-serialized batches as they are
    explain_pb2_grpc.add_ExplainServiceServicer_to_server(explain, server)
    entitlements_pb2_grpc.add_EntitlementServiceServicer_to_server(entitlements, server)
    security_codes_pb2_grpc.add_SecurityCodeServiceServicer_to_server(security_codes, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection((*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server)
    port = server.add_secure_port(listen, tls.credentials()) if tls else server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen for gRPC on {listen}")
    return server, port
