# Multi-stage build: wheels in a builder, a slim non-root runtime with Mosquitto for the
# embedded (managed broker) mode. At scale, set GATEWAY_MQTT_URL to an external broker.
# Both stages use one base, pinned by tag and digest: the tag says which release it is, the digest
# makes a rebuild start from the same bytes (the tag moves with Debian and Python updates). Move
# both lines together, deliberately (README "Container image"); tests/unit/test_dockerfile.py
# checks they agree.
FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91 AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91 AS runtime
# mosquitto is not pinned to a version (DL3008): Debian's security updates replace the exact
# version in bookworm, so a pin would stop the build; the base image tag fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends mosquitto \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 gateway \
 && useradd --system --create-home --uid 10001 --gid 10001 gateway \
 && install -d -o 10001 -g 10001 -m 0700 /home/gateway/data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY sim_profiles /opt/gateway/sim_profiles
COPY roaming /opt/gateway/roaming
# Numeric, so Kubernetes' runAsNonRoot can verify it (10001 is the user created above).
USER 10001:10001
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
# plain listener is unauthenticated and stays on the container's loopback. The development
# broker certificate names the container's hostname: start it with `--hostname` set to the
# name cars connect to (or use a broker certificate of your own PKI, an external broker).
EXPOSE 50051 8080 18883
# The data directory (SQLite, the development PKI, the admin credential, the managed broker's
# persistence) outlives the container. It is created above owned by 10001, so a fresh named
# volume starts writable for the gateway's user.
VOLUME ["/home/gateway/data"]
# Alive = /healthz answers (readiness, /readyz, is for load balancers: a gateway waiting for its
# database is alive, not ready). The slim image has no curl: Python's urllib, on the port that
# GATEWAY_HTTP_LISTEN names, so the check follows a changed listener.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; port = os.environ.get('GATEWAY_HTTP_LISTEN', ':8080').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]
ENTRYPOINT ["telematics-gateway"]
CMD ["run"]
