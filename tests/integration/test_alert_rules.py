"""promtool accepts the alert rules (deploy/prometheus/rules/*.yml) and passes their unit tests
(deploy/prometheus/tests/*.yml: a firing and a quiet case per alert, annotations included);
and it fails them when a rule changes under them. tests/unit/test_alert_catalogue.py checks
that every alert has both cases, a runbook section and catalogued metrics."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.config import PROJECT_ROOT

pytestmark = pytest.mark.integration

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"  # Debian's prometheus package
DEPLOY = PROJECT_ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((DEPLOY / "rules").glob("*.yml"))
TEST_FILES = sorted((DEPLOY / "tests").glob("*.yml"))

if not Path(PROMTOOL).is_file():  # scripts/bootstrap.sh dev installs it
    pytest.skip(
        "promtool is not installed (scripts/bootstrap.sh dev installs prometheus)", allow_module_level=True
    )


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_there_are_rule_files_and_tests_of_them() -> None:
    assert RULE_FILES and TEST_FILES


def test_promtool_accepts_the_rule_files() -> None:
    done = _promtool("check", "rules", *RULE_FILES)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_promtool_unit_test_of_the_rules_passes() -> None:
    done = _promtool("test", "rules", *TEST_FILES)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_fail_when_a_rule_waits_longer(tmp_path: Path) -> None:
    # The run above can fail: GatewayDown waiting 20 minutes instead of 2 misses its firing case.
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    down = 'expr: up{job="gateway"} == 0\n        for: 2m'
    for rules in RULE_FILES:
        changed = rules.read_text(encoding="utf-8").replace(down, down.replace("2m", "20m"))
        (tmp_path / "rules" / rules.name).write_text(changed, encoding="utf-8")
    assert any(
        "for: 20m" in p.read_text(encoding="utf-8") for p in (tmp_path / "rules").iterdir()
    ), "the GatewayDown rule was not found to change"
    for test in TEST_FILES:
        shutil.copy(test, tmp_path / "tests" / test.name)
    done = _promtool("test", "rules", *sorted((tmp_path / "tests").iterdir()))
    assert done.returncode != 0
    assert "GatewayDown" in done.stdout + done.stderr
