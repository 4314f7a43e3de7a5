"""Identity and authorization: one module per concern (codes: the R7 security code)."""
