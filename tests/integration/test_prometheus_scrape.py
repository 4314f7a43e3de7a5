"""A real Prometheus, run with the compose configuration (deploy/prometheus/prometheus.yml,
its target moved to an in-process gateway's ephemeral HTTP port, scraped every second),
stores the gateway's series: up, gateway_build_info, the process collector's, and every
family of docs/metrics.md from the first scrape (no series waits for its first event)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from metrics_catalogue import catalogue
from support import eventually, free_port

from gateway.app import Gateway
from gateway.config import PROJECT_ROOT
from gateway.version import gateway_version

pytestmark = pytest.mark.integration

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"  # of the same package
DEPLOY = PROJECT_ROOT / "deploy" / "prometheus"

if not Path(PROMETHEUS).is_file():  # scripts/bootstrap.sh installs the Debian package
    pytest.skip("prometheus is not installed (scripts/bootstrap.sh dev installs it)", allow_module_level=True)


def _config(target: str) -> dict[str, Any]:
    """The compose configuration, scraping `target` (and evaluating the rules) every second."""
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"  # the alert rules too
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    return config


@pytest.fixture
def prometheus(tmp_path: Path, gateway: Gateway) -> Iterator[str]:
    """Prometheus scraping `gateway`; its HTTP API's base URL."""
    home = tmp_path / "prometheus"
    home.mkdir()
    if (DEPLOY / "rules").is_dir():  # the alert rules load as in compose (rule_files: rules/*.yml)
        shutil.copytree(DEPLOY / "rules", home / "rules")
    (home / "prometheus.yml").write_text(yaml.safe_dump(_config(f"127.0.0.1:{gateway.http_port}")))
    port = free_port()
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={home / 'prometheus.yml'}", f"--storage.tsdb.path={home / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            print(proc.stderr.read().decode(errors="replace")[-4000:])  # shown when the test fails
            proc.stderr.close()


async def _query(base: str, promql: str) -> list[dict[str, Any]]:
    """The instant vector of `promql` (empty while Prometheus starts or has not scraped yet)."""
    try:
        async with aiohttp.ClientSession() as http, http.get(
            f"{base}/api/v1/query", params={"query": promql}, timeout=aiohttp.ClientTimeout(total=5)
        ) as resp:
            body = await resp.json()
    except (TimeoutError, aiohttp.ClientError):
        return []
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def test_prometheus_scrapes_the_gateway_and_stores_its_series(prometheus: str) -> None:
    up = await eventually(lambda: _query(prometheus, 'up{job="gateway"}'), lambda r: bool(r), timeout=60)
    assert [s["value"][1] for s in up] == ["1"]
    (build,) = await _query(prometheus, "gateway_build_info")
    assert build["metric"]["version"] == gateway_version() and build["value"][1] == "1"
    (cpu,) = await _query(prometheus, 'process_cpu_seconds_total{job="gateway"}')
    assert float(cpu["value"][1]) > 0
    (rss,) = await _query(prometheus, "process_resident_memory_bytes")
    assert float(rss["value"][1]) > 1e6


async def test_every_catalogued_family_has_a_series_from_the_first_scrape(prometheus: str) -> None:
    await eventually(lambda: _query(prometheus, 'up{job="gateway"}'), lambda r: bool(r), timeout=60)
    names = await _query(prometheus, 'count by (__name__) ({job="gateway"})')
    stored = {s["metric"]["__name__"] for s in names}
    rows = catalogue()
    exported = {name + "_count" if row.type == "histogram" else name for name, row in rows.items()}
    assert sorted(exported - stored) == []
    # Labelled series too, before any event: a reject reason no car has caused yet.
    (quarantined,) = await _query(prometheus, 'gateway_messages_rejected_total{reason="quarantined"}')
    assert quarantined["value"][1] == "0"


async def test_prometheus_loads_every_alert_rule_and_evaluates_it_without_error(prometheus: str) -> None:
    # The rules as compose loads them (rules/*.yml), run against the gateway's real series: each
    # evaluates (health "ok"), and none fires on a healthy gateway without traffic.
    expected = {
        rule["alert"]
        for path in (DEPLOY / "rules").glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    }
    await eventually(lambda: _query(prometheus, 'up{job="gateway"}'), lambda r: bool(r), timeout=60)

    async def rules() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.get(
            f"{prometheus}/api/v1/rules", params={"type": "alert"}, timeout=aiohttp.ClientTimeout(total=5)
        ) as resp:
            body = await resp.json()
        return [r for g in body["data"]["groups"] for r in g["rules"]]

    loaded = await eventually(rules, lambda rs: bool(rs) and all(r["health"] == "ok" for r in rs), timeout=60)
    assert {r["name"] for r in loaded} == expected
    assert [r["name"] for r in loaded if r["state"] != "inactive"] == []


def test_promtool_accepts_the_compose_configuration_and_its_rule_files() -> None:
    # Checks the scrape configuration and every rule file `rule_files` matches (none yet is fine).
    done = subprocess.run([PROMTOOL, "check", "config", str(DEPLOY / "prometheus.yml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_refuses_a_broken_configuration(tmp_path: Path) -> None:
    # The check above can fail: a scrape job without a name.
    config = _config("127.0.0.1:1")
    del config["scrape_configs"][0]["job_name"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    done = subprocess.run([PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
