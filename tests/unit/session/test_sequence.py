from gateway.session.sequence import WINDOW, Arrival, classify


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
