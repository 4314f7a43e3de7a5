"""The pure entitlement domain: types, contract terms, the lifecycle, FoD eligibility (R17's one
decision, `eligibility.fod_window`), what the catalogue sells (`offer`) and Explain's texts.

No I/O here: no asyncio, no protobuf, no database (a test walks every module's imports). The
engine calls these functions with facts and a time; `gateway.entitlements` re-exports the
public names.
"""
