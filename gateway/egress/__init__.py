"""Egress: what leaves the gateway for backends."""
