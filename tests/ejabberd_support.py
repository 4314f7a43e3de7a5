"""The second real MQTT 5 broker of the suite: a private ejabberd node (load/ejabberd_node.py, shared
with the benchmark `python -m load.second_broker`)."""

from __future__ import annotations

from load.ejabberd_node import Ejabberd, Unavailable

# The brokers an end-to-end test parametrizes `broker_kind` with (tests/integration/conftest.py).
BROKERS = ["mosquitto", "ejabberd"]

__all__ = ["BROKERS", "Ejabberd", "Unavailable"]
