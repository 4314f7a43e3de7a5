"""The v1 reflection protocol is served with v1alpha's messages: that is only sound while the two
are the same on the wire, field for field."""

from __future__ import annotations

from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2

from gateway.api.reflection_v1 import SERVICE_NAME, register_v1_descriptor


def test_the_v1_messages_match_v1alpha_field_for_field() -> None:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(reflection_pb2.DESCRIPTOR.serialized_pb)  # what v1's fields refer to
    register_v1_descriptor(pool)
    register_v1_descriptor(pool)  # idempotent: a second server in one process
    v1 = pool.FindFileByName("grpc/reflection/v1/reflection.proto")
    alpha = reflection_pb2.DESCRIPTOR
    assert set(v1.message_types_by_name) == set(alpha.message_types_by_name)
    for name, message in alpha.message_types_by_name.items():
        fields = {(f.number, f.name, f.type) for f in message.fields}
        assert {(f.number, f.name, f.type) for f in v1.message_types_by_name[name].fields} == fields, name
        for f in v1.message_types_by_name[name].fields:
            if f.message_type is not None:
                assert f.message_type.full_name.startswith("grpc.reflection.v1."), f.full_name
    method = pool.FindServiceByName(SERVICE_NAME).methods_by_name["ServerReflectionInfo"]
    assert method.input_type.full_name == "grpc.reflection.v1.ServerReflectionRequest"
    assert method.output_type.full_name == "grpc.reflection.v1.ServerReflectionResponse"
    assert method.client_streaming and method.server_streaming
