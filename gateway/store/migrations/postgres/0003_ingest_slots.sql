-- Ingest slots (gateway/ingress/slots.py): the MQTT client ids of the shared-subscription group,
-- each held by one gateway under a lease. Expiry is judged by the database's clock (now()).
CREATE TABLE ingest_slots (
    slot text PRIMARY KEY,                   -- the MQTT client id, <mqtt_client_id>-<n>
    holder text NOT NULL DEFAULT '',         -- the gateway holding it, or that held it last ('': never held)
    expires_at timestamptz NOT NULL DEFAULT '-infinity'
);
-- The gateways alive (heartbeat with every renewal round): each holds about its fair share.
CREATE TABLE ingest_members (
    holder text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
