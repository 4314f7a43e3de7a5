#!/bin/sh
# A gateway instance of docker-compose.yml: the database and broker URLs are built here from
# the secrets volume, so no password is in the compose file or the container's configuration.
set -eu
S="${SECRETS:-/secrets}"
GATEWAY_STORE_URL="postgresql://gateway:$(cat "$S/postgres_password")@postgres:5432/gateway"
GATEWAY_MQTT_URL="mqtt://gateway:$(cat "$S/broker_password")@broker:1883"
export GATEWAY_STORE_URL GATEWAY_MQTT_URL
exec telematics-gateway run
