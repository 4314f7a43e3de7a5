"""The public surface of gateway.rules stays small and deliberate."""

from __future__ import annotations

import gateway.rules


def test_rules_exports_only_the_documented_names() -> None:
    assert sorted(gateway.rules.__all__) == [
        "Decision",
        "Explanation",
        "LinkingFacts",
        "Outcome",
        "Reason",
        "TelemetryRedaction",
        "evaluate",
        "explain",
        "fod_retry_steps",
        "is_abroad",
        "linking_advice",
        "linking_facts",
        "offline_grace_s",
        "privacy_filter",
        "remote_command_allowed",
        "security_code_decision",
        "security_code_required",
        "service_access",
        "service_available",
        "strictest_privacy",
        "telemetry_redaction",
        "visited_country",
        "withholds_visited_country",
        "without_place",
    ]
    for name in gateway.rules.__all__:
        assert hasattr(gateway.rules, name)
