"""Ingress: the MQTT 5 client the gateway receives vehicle traffic with."""
