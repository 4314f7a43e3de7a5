# Multi-stage build: wheels in a builder, a slim non-root runtime with Mosquitto for the
# embedded (managed broker) mode. At scale, set GATEWAY_MQTT_URL to an external broker.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends mosquitto \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --uid 10001 gateway
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY sim_profiles /opt/gateway/sim_profiles
COPY roaming /opt/gateway/roaming
USER gateway
WORKDIR /home/gateway
# gRPC on 0.0.0.0 needs TLS (plaintext is allowed on loopback only): mount a certificate and set
# GATEWAY_GRPC_TLS_CERT and GATEWAY_GRPC_TLS_KEY (README: Backend authentication), or the start
# stops with exit code 2. The admin token is created in /home/gateway/data/credentials/.
ENV GATEWAY_DATA_DIR=/home/gateway/data \
    GATEWAY_REFERENCE_DIR=/opt/gateway \
    GATEWAY_GRPC_LISTEN=0.0.0.0:50051 \
    GATEWAY_HTTP_LISTEN=0.0.0.0:8080 \
    GATEWAY_MQTT_TLS_HOST=0.0.0.0
# Cars reach the managed broker's TLS listener (client certificates, README "Identity"); its
# plain listener is unauthenticated and stays on the container's loopback.
EXPOSE 50051 8080 18883
ENTRYPOINT ["telematics-gateway"]
CMD ["run"]
