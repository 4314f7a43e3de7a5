"""ReferenceStore swaps a whole snapshot or keeps the old one."""

from __future__ import annotations

from pathlib import Path

from gateway.reference import ReferenceStore


def test_reload_with_a_bad_file_keeps_the_old_snapshot_and_says_why(data_copy: Path) -> None:
    store = ReferenceStore.load(data_copy)
    before = store.current
    path = data_copy / "roaming/countries/de.toml"
    path.write_text(path.read_text("utf-8").replace("mccs = [262]", "mccs = ["), "utf-8")

    ok, message = store.reload(data_copy)

    assert not ok
    assert store.current is before
    assert "roaming/countries/de.toml: line" in message
    assert "kept 13 sim profiles, 45 countries" in message


def test_reload_with_good_data_swaps_in_the_new_snapshot(data_copy: Path) -> None:
    store = ReferenceStore.load(data_copy)
    before = store.current
    path = data_copy / "roaming/countries/de.toml"
    path.write_text(path.read_text("utf-8").replace(
        'support_contact = "smartmobility@de.porsche.com"',
        'support_contact = "connect@de.porsche.com"',
    ), "utf-8")

    ok, message = store.reload(data_copy)

    assert ok
    assert message.startswith("reloaded: 13 sim profiles")
    assert store.current is not before
    assert store.current.country("DE").support_contact == "connect@de.porsche.com"
    assert before.country("DE").support_contact == "smartmobility@de.porsche.com"


def test_reload_of_unchanged_data_says_so(data_copy: Path) -> None:
    store = ReferenceStore.load(data_copy)
    ok, message = store.reload(data_copy)
    assert ok
    assert message.startswith("unchanged: ")
