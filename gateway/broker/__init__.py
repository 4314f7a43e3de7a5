"""The managed Mosquitto broker used by the embedded (one machine) deployment."""
