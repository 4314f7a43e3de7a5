"""The gRPC API for backends (proto/telematics/v1 is the contract)."""
