"""Connected-car telematics gateway: MQTT 5 in, rules, gRPC out."""

__all__ = ["__version__"]

__version__ = "0.1.0"
