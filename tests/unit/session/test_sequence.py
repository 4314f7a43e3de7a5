from hypothesis import given
from hypothesis import strategies as st

from gateway.session.sequence import MAX_JUMP, WINDOW, Arrival, Space, classify, classify_epoch


def run(seqs: list[int]) -> list[Arrival]:
    last, window, out = 0, 0, []
    for seq in seqs:
        arrival, last, window = classify(last, window, seq)
        out.append(arrival)
    return out


def test_increasing_sequences_are_new() -> None:
    assert run([1, 2, 5, 6]) == [Arrival.NEW] * 4


def test_exact_repeat_of_the_last_is_a_duplicate() -> None:
    assert run([1, 2, 2]) == [Arrival.NEW, Arrival.NEW, Arrival.DUPLICATE]


def test_first_arrival_of_an_older_number_is_late_and_its_repeat_a_duplicate() -> None:
    assert run([1, 3, 2, 2]) == [Arrival.NEW, Arrival.NEW, Arrival.LATE, Arrival.DUPLICATE]


def test_repeat_of_an_older_seen_number_is_a_duplicate() -> None:
    assert run([1, 2, 3, 4, 2]) == [Arrival.NEW] * 4 + [Arrival.DUPLICATE]


def test_numbers_older_than_the_window_are_too_old() -> None:
    assert run([1, WINDOW + 10, 2])[-1] is Arrival.TOO_OLD


def test_a_jump_beyond_the_window_forgets_what_was_seen() -> None:
    assert run([5, 5 + WINDOW + 1, 5 + WINDOW])[-1] is Arrival.LATE


# -- far-ahead sequences and sequence epochs (a car must never be frozen) --

OLD, NEW_INSTALL = 0x1111, 0x2222
NI = NEW_INSTALL


def run_epochs(envelopes: list[tuple[int, int, bool]]) -> list[Arrival]:
    """(epoch, sequence, is_hello) in arrival order -> arrivals."""
    current, previous, out = Space(), Space(), []
    for epoch, seq, hello in envelopes:
        arrival, current, previous = classify_epoch(current, previous, epoch, seq, hello=hello)
        out.append(arrival)
    return out


def test_a_far_ahead_sequence_is_refused_and_the_next_ones_still_apply() -> None:
    assert run([1, 2, 9223372036854775808, 3, 4]) == [
        Arrival.NEW, Arrival.NEW, Arrival.JUMP, Arrival.NEW, Arrival.NEW,
    ]


def test_a_jump_within_the_bound_is_accepted() -> None:
    assert run([1, 1 + MAX_JUMP]) == [Arrival.NEW, Arrival.NEW]


def test_a_jump_confirmed_by_the_next_envelope_is_followed() -> None:
    # The car's counter really moved (a corrupted store, a long run of lost QoS 0 messages):
    # the first is refused, the second agrees with it, and the gateway follows.
    far = 5 + MAX_JUMP + 10
    assert run_epochs([(OLD, 5, True), (OLD, far, False), (OLD, far + 1, False), (OLD, far + 2, False)]) == [
        Arrival.NEW, Arrival.JUMP, Arrival.NEW, Arrival.NEW,
    ]


def test_a_refused_jump_is_forgotten_once_the_normal_sequence_continues() -> None:
    far = 5 + MAX_JUMP + 10
    assert run_epochs([(OLD, 5, True), (OLD, far, False), (OLD, 6, False), (OLD, far + 1, False)]) == [
        Arrival.NEW, Arrival.JUMP, Arrival.NEW, Arrival.JUMP,
    ]


def test_the_first_envelope_of_a_never_seen_car_opens_its_space_whatever_its_number() -> None:
    assert run_epochs([(OLD, 10**12, False), (OLD, 10**12 + 1, False)]) == [Arrival.NEW, Arrival.NEW]


def test_a_hello_with_a_new_epoch_starts_counting_from_one_again() -> None:
    assert run_epochs([(OLD, 5000, True), (OLD, 5001, False), (NI, 1, True), (NI, 2, False)]) == [
        Arrival.NEW, Arrival.NEW, Arrival.NEW, Arrival.NEW,
    ]


def test_redeliveries_of_the_replaced_epoch_are_told_apart_and_never_switch_back() -> None:
    arrivals = run_epochs([
        (OLD, 5000, True), (OLD, 5001, False), (OLD, 5003, False),
        (NEW_INSTALL, 1, True),
        (OLD, 5001, False),   # a QoS 1 redelivery from before the reset: seen
        (OLD, 5002, False),   # first arrival from before the reset: data kept, no state
        (OLD, 5004, False),   # above the old space's highest: still no state (the space is retired)
        (NEW_INSTALL, 2, False),
    ])
    assert arrivals == [
        Arrival.NEW, Arrival.NEW, Arrival.NEW, Arrival.NEW,
        Arrival.DUPLICATE, Arrival.LATE, Arrival.LATE, Arrival.NEW,
    ]


def test_a_redelivered_hello_of_the_replaced_epoch_does_not_switch_back() -> None:
    assert run_epochs([(OLD, 7, True), (NI, 1, True), (OLD, 7, True), (NI, 2, False)])[2:] == [
        Arrival.DUPLICATE, Arrival.NEW,
    ]


def test_the_cars_own_hello_wins_back_after_a_spoofed_hello_of_another_epoch() -> None:
    # A spoofer took over the car's client id with a made-up epoch; the car reconnects with
    # its own epoch and its counter further on: it is current again.
    spoof = 0xBAD
    arrivals = run_epochs([(OLD, 40, True), (spoof, 2**63, True), (OLD, 41, True), (OLD, 42, False)])
    assert arrivals == [Arrival.NEW, Arrival.NEW, Arrival.NEW, Arrival.NEW]


def test_envelopes_of_an_epoch_without_hello_change_no_state_until_its_hello() -> None:
    assert run_epochs([(OLD, 9, True), (NI, 1, False), (NI, 2, True), (NI, 3, False)]) == [
        Arrival.NEW, Arrival.OTHER_EPOCH, Arrival.NEW, Arrival.NEW,
    ]


def test_cars_without_epochs_keep_the_old_duplicate_and_late_rules() -> None:
    assert run_epochs([(0, 1, True), (0, 3, False), (0, 2, False), (0, 2, False), (0, 3, False)]) == [
        Arrival.NEW, Arrival.NEW, Arrival.LATE, Arrival.DUPLICATE, Arrival.DUPLICATE,
    ]


@given(
    real=st.integers(min_value=2, max_value=200),
    junk=st.dictionaries(
        st.integers(min_value=0, max_value=199).map(lambda i: i * 2),  # never two in a row
        st.integers(min_value=MAX_JUMP + 300, max_value=2**64 - 1),
        max_size=20,
    ),
)
def test_no_single_far_ahead_envelope_stops_a_cars_sequence(real: int, junk: dict[int, int]) -> None:
    envelopes: list[tuple[int, int, bool]] = []
    for seq in range(1, real + 1):
        if seq in junk:
            envelopes.append((OLD, junk[seq], False))
        envelopes.append((OLD, seq, seq == 1))
    arrivals = run_epochs(envelopes)
    real_arrivals = [a for (e, s, _), a in zip(envelopes, arrivals, strict=True) if s <= real]
    assert real_arrivals == [Arrival.NEW] * real


@given(
    before=st.lists(st.integers(min_value=1, max_value=2**64 - 1), max_size=30),
    epoch=st.integers(min_value=1, max_value=2**64 - 1),
    count=st.integers(min_value=1, max_value=50),
)
def test_a_hello_with_a_new_epoch_always_unfreezes_the_car(before: list[int], epoch: int, count: int) -> None:
    old = 0 if epoch != 0 else 1
    envelopes = [(old, s, i == 0) for i, s in enumerate(before)]
    envelopes += [(epoch, s, s == 1) for s in range(1, count + 1)]
    assert run_epochs(envelopes)[len(before):] == [Arrival.NEW] * count


@given(st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=120))
def test_first_arrivals_deliver_and_repeats_are_dropped_within_the_window(seqs: list[int]) -> None:
    seen: set[int] = set()
    for seq, arrival in zip(seqs, run_epochs([(OLD, s, False) for s in seqs]), strict=True):
        if seq in seen:
            assert arrival is Arrival.DUPLICATE
        else:
            assert arrival in (Arrival.NEW, Arrival.LATE)
        seen.add(seq)
