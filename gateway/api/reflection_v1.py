"""Server reflection as grpc.reflection.v1 next to v1alpha.

Current tools (buf curl, grpcurl, Postman) ask for v1 first; grpcio-reflection (1.85) serves
only v1alpha. The two protocols are the same proto under another package name (same messages,
same field numbers), so one servicer answers both: the v1 service is registered with the
v1alpha message classes, which read and write the same bytes. The v1 file descriptor is
derived from v1alpha's (package and type names changed) so that reflection can describe the
v1 service itself, as `buf curl --list-methods` asks."""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"
_ALPHA_PACKAGE = reflection_pb2.DESCRIPTOR.package  # grpc.reflection.v1alpha


def _v1_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = _V1_FILE
    proto.package = "grpc.reflection.v1"
    proto.ClearField("options")  # v1alpha's language options (deprecated = true among them)
    old, new = f".{_ALPHA_PACKAGE}.", ".grpc.reflection.v1."
    for message in proto.message_type:
        for fld in message.field:
            if fld.HasField("type_name"):  # set only on message and enum fields (proto2 presence)
                fld.type_name = fld.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    return proto


def register_v1_descriptor(pool: descriptor_pool.DescriptorPool | None = None) -> None:
    """Add the v1 reflection file to the pool reflection answers from (idempotent)."""
    pool = pool or descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
    except KeyError:
        pool.Add(_v1_file_descriptor())


def enable_reflection(service_names: tuple[str, ...], server: grpc.aio.Server) -> None:
    """Serve reflection on v1alpha and v1, each listing ``service_names`` and both reflection
    services."""
    register_v1_descriptor()
    names = (*service_names, reflection.SERVICE_NAME, SERVICE_NAME)
    reflection.enable_server_reflection(names, server)  # v1alpha, with its own servicer
    servicer = reflection.aio.ReflectionServicer(names)  # the asyncio servicer v1alpha uses too
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, {"ServerReflectionInfo": handler}),)
    )
