"""Identity and authorization: one module per concern (pki: certificates for cars, the broker
and the gateway; codes, code_store: the R7 security code)."""
