"""R7: the code's format, its salted slow hash and the lockout state machine (pure values)."""

from __future__ import annotations

import hmac

import pytest

from gateway.security.codes import CodeRecord, LockoutPolicy, check_format, hash_code, verify_code


@pytest.mark.parametrize("code", ["1234", "00000000", "5678901"])
def test_four_to_eight_ascii_digits_are_a_code(code: str) -> None:
    assert check_format(code) is None


@pytest.mark.parametrize(
    "code",
    # Arabic-Indic and full-width digits are digits to str.isdigit, not to the code format.
    ["", "123", "123456789", "12a4", " 1234", "1234\n", "\u0661\u0662\u0663\u0664",
     "\uff11\uff12\uff13\uff14", "12.4"],
)
def test_anything_else_is_refused_without_echoing_it(code: str) -> None:
    problem = check_format(code)
    assert problem == "a security code is 4 to 8 digits 0-9"


def test_the_same_code_hashes_differently_for_two_accounts() -> None:
    first, second = hash_code("4711"), hash_code("4711")
    assert first != second  # a fresh salt each time
    assert verify_code("4711", first) and verify_code("4711", second)
    assert "4711" not in first


def test_the_hash_names_its_scrypt_parameters() -> None:
    scheme, n, r, p, _salt, _key = hash_code("4711").split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", 2**14, 8, 1)


def test_a_wrong_code_does_not_verify() -> None:
    stored = hash_code("4711")
    assert not verify_code("4712", stored)
    assert not verify_code("47110", stored)


@pytest.mark.parametrize("stored", ["", "plain4711", "md5$1$2$3$x$y", "scrypt$x$8$1$AA==$AA=="])
def test_a_stored_value_that_is_not_our_hash_never_matches(stored: str) -> None:
    assert not verify_code("4711", stored)


def test_the_keys_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    stored = hash_code("4711")
    assert verify_code("4711", stored) and not verify_code("0000", stored)
    assert len(calls) == 2 and all(len(a) == len(b) == 32 for a, b in calls)


# -- the lockout state machine ------------------------------------------------------------------

POLICY = LockoutPolicy(max_failures=5, lockout_s=900.0)
T0 = 1_767_225_600.0


def test_the_fifth_wrong_code_in_a_row_locks_for_the_lockout_time() -> None:
    record = CodeRecord(code_hash="h")
    for i in range(1, 5):
        record = record.after_wrong(T0 + i, POLICY)
        assert record.failures == i and not record.locked_at(T0 + i)
    record = record.after_wrong(T0 + 5, POLICY)
    assert record.locked_until == T0 + 5 + 900
    assert record.locked_at(T0 + 5 + 899.9) and not record.locked_at(T0 + 5 + 900)


def test_a_right_code_clears_the_count() -> None:
    record = CodeRecord(code_hash="h", failures=4).after_right()
    assert record.failures == 0 and record.locked_until == 0
    assert not record.after_wrong(T0, POLICY).locked_until  # a new series of five


def test_a_lockout_that_ran_out_starts_a_new_series() -> None:
    locked = CodeRecord(code_hash="h", failures=5, locked_until=T0 + 900)
    assert locked.settled(T0 + 899) == locked  # still locked: nothing changes
    settled = locked.settled(T0 + 900)
    assert settled == CodeRecord(code_hash="h", failures=0, locked_until=0.0)
    assert not settled.after_wrong(T0 + 901, POLICY).locked_until
