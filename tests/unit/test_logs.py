"""Log output: JSON lines with ts, level, logger, event, message and fields; rejections summed
up without VINs at most once per interval (driven by the injectable clock)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from gateway import logs
from gateway.clock import ManualClock
from gateway.config import ConfigError, load_config
from gateway.rejection_log import RejectionSummary

VIN = "WP0ZZZ99ZJS123456"


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    stream = io.StringIO()
    logs.configure("DEBUG", "json", stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_json_line_has_ts_level_logger_event_message_and_the_fields(out: io.StringIO) -> None:
    logging.getLogger("gateway.x").warning("broker %s died:\n%s", 12, "killed", extra={"event": "broker_died",
                                                                                     "pid": 12})
    [line] = lines(out)  # the newline in the message does not start a second line
    assert line.pop("ts")
    assert line == {"level": "WARNING", "logger": "gateway.x", "event": "broker_died",
                    "message": "broker 12 died:\nkilled", "pid": 12}


def test_without_an_event_the_name_comes_from_the_template_not_the_values(out: io.StringIO) -> None:
    log = logging.getLogger("gateway.y")
    log.info("managed mosquitto (pid %s) died: %s; restarting it", 1, "a")
    log.info("managed mosquitto (pid %s) died: %s; restarting it", 2, "b")
    assert [line["event"] for line in lines(out)] == ["managed_mosquitto_pid_died_restarting_it"] * 2


def test_text_is_one_line_per_record_as_before() -> None:
    stream = io.StringIO()
    handler = logs.configure("INFO", "text", stream)
    try:
        logging.getLogger("gateway.z").info("hello %s", "there")
        logging.getLogger("gateway.z").debug("not at INFO")
    finally:
        logging.getLogger().removeHandler(handler)
    [line] = stream.getvalue().splitlines()
    assert line.endswith(" INFO gateway.z: hello there")


def test_log_format_is_text_or_json() -> None:
    assert load_config(env={}).log_format == "text"
    assert load_config(env={"GATEWAY_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError, match="not one of text, json"):
        load_config(env={"GATEWAY_LOG_FORMAT": "xml"})


def test_rejections_are_summed_up_without_vins_at_most_once_per_interval(out: io.StringIO) -> None:
    clock = ManualClock()
    summary = RejectionSummary(clock, interval_s=10)
    summary.add({"oversize": 1})  # the first is told at once
    for _ in range(100):
        clock.advance(0.05)
        summary.add({"rate_limited": 3, "oversize": 0})
    assert len(lines(out)) == 1
    clock.advance(5.5)  # 10.5 s after the first line
    summary.add({})
    told = lines(out)
    assert [line["event"] for line in told] == ["uplink_rejections"] * 2
    assert told[1]["count"] == 300 and "rate_limited=300" in str(told[1]["message"])
    assert VIN not in out.getvalue()
    clock.advance(3600)
    summary.add({})
    assert len(lines(out)) == 2  # nothing rejected meanwhile: nothing to tell
