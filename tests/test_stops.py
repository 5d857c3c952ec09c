"""The stop filter: whatever the chunking, the released text is the full text cut at
the first stop sequence, and no part of a stop sequence is ever released."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelport.stops import StopSequenceFilter

# A small alphabet makes stop sequences (and near misses) occur often.
ALPHABET = "ab\n.É😀"
texts = st.text(alphabet=ALPHABET, max_size=60)
stops = st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=4), min_size=0, max_size=4)


def reference_cut(text: str, stop_sequences: list[str]) -> tuple[str, bool]:
    """Cut before the stop that completes first, as a generation running token by
    token would stop (ties: the longer stop, which starts earlier)."""
    found = [(text.find(stop) + len(stop), text.find(stop)) for stop in stop_sequences if stop in text]
    return (text[: min(found)[1]], True) if found else (text, False)


def whole(text: str, stop_sequences: list[str]) -> tuple[str, bool]:
    """A finished text through the filter in one piece: (what it releases, whether it stopped)."""
    stop_filter = StopSequenceFilter(stop_sequences)
    released = stop_filter.feed(text)
    return released + stop_filter.flush(), stop_filter.stopped


def chunked(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(cut, len(text)) for cut in cuts})
    pieces, start = [], 0
    for point in [*points, len(text)]:
        pieces.append(text[start:point])
        start = point
    return pieces


@settings(max_examples=1000)
@given(text=texts, stop_sequences=stops, cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=20))
def test_any_chunking_releases_the_text_cut_at_the_first_stop(
    text: str, stop_sequences: list[str], cuts: list[int]
) -> None:
    stop_filter = StopSequenceFilter(stop_sequences)
    released = [stop_filter.feed(piece) for piece in chunked(text, cuts)]
    released.append(stop_filter.flush())
    expected, found = reference_cut(text, stop_sequences)
    assert "".join(released) == expected
    assert stop_filter.stopped is found


@settings(max_examples=1000)
@given(text=texts, stop_sequences=stops.filter(bool))
def test_one_character_at_a_time_never_releases_part_of_a_stop(text: str, stop_sequences: list[str]) -> None:
    stop_filter = StopSequenceFilter(stop_sequences)
    released = ""
    for char in text:
        released += stop_filter.feed(char)
        # Whatever has been released so far contains no stop sequence...
        assert not any(stop in released for stop in stop_sequences)
    released += stop_filter.flush()
    assert released == reference_cut(text, stop_sequences)[0]


def test_a_stop_split_across_chunks_is_caught() -> None:
    stop_filter = StopSequenceFilter(["END"])
    assert stop_filter.feed("the EN") == "the "
    assert stop_filter.feed("D and more") == ""
    assert stop_filter.stopped
    assert stop_filter.flush() == ""


def test_held_text_that_turns_out_not_to_be_a_stop_is_released() -> None:
    stop_filter = StopSequenceFilter(["END"])
    assert stop_filter.feed("the EN") == "the "
    assert stop_filter.feed("TRY") == "ENTRY"
    assert stop_filter.flush() == ""
    assert not stop_filter.stopped


def test_the_earliest_of_several_stops_wins() -> None:
    assert whole("one, two. three", [".", ","]) == ("one", True)


def test_overlapping_stops_cut_where_generation_would_have_stopped() -> None:
    # Token by token, "." completes before "a.a" could: the text is "a" either way.
    assert whole("a.a", [".", "a.a"]) == ("a", True)
    stop_filter = StopSequenceFilter([".", "a.a"])
    assert stop_filter.feed("a") + stop_filter.feed(".") + stop_filter.feed("a") + stop_filter.flush() == "a"


def test_feeding_after_a_stop_releases_nothing() -> None:
    stop_filter = StopSequenceFilter(["x"])
    stop_filter.feed("axb")
    assert stop_filter.feed("more") == ""


def test_empty_stop_sequences_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        StopSequenceFilter([""])
