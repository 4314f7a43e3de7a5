"""Pure rules over reference data and a vehicle session: connectivity, roaming, privacy.

Each rule returns a `Decision` (rule id, outcome, reason code, detail); `explain` turns the
refusals into next steps for the driver.
"""

from gateway.rules.access import is_abroad, service_access, service_available
from gateway.rules.decision import Decision, Outcome, Reason
from gateway.rules.evaluate import evaluate, visited_country
from gateway.rules.explain import Explanation, explain, fod_retry_steps
from gateway.rules.linking import LinkingFacts, linking_advice, linking_facts
from gateway.rules.presence import offline_grace_s
from gateway.rules.privacy import (
    TelemetryRedaction,
    privacy_filter,
    remote_command_allowed,
    strictest_privacy,
    telemetry_redaction,
    withholds_visited_country,
    without_place,
)
from gateway.rules.security_code import security_code_decision, security_code_required

__all__ = [
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
