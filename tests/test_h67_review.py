"""Stop 67 review (h) of the long-documents branch: chunk edges against Unicode's own segmentation (the `regex`
module's ``\\X``, with GB9c's leading consonant, which ``regex`` does not require, checked from its InCB data)."""

from __future__ import annotations

import threading

import pytest

regex = pytest.importorskip("regex")  # (installed with transformers; an independent UAX #29 reference)

from tokenpool.model.document_tokens import joined_characters  # noqa: E402

FLAG = "\U0001f1eb"  # a regional indicator: two make a flag


def _clusters(text: str) -> list[tuple[int, int]]:
    """``[start, end)`` of ``text``'s clusters of several code points, by ``\\X`` (UAX #29 as ``regex`` has it)."""
    return [m.span() for m in regex.finditer(r"\X", text) if len(m.group()) > 1]


class _SameHash(str):
    """A text whose hash is one constant: two of one length look alike to a (len, hash) key (as two documents
    whose hashes collide would)."""

    def __hash__(self) -> int:
        return 1


def test_flag_pairs_are_read_from_each_texts_own_run():
    """The flag-run memo was keyed by (len, hash) of the text: after "a" + 5 indicators, "ab" + 4 indicators (same
    length, same hash) paired its indicators from the other text's run start, silently ([(3, 5)]).
    Reference: ``regex``'s ``\\X``."""
    first, second = _SameHash("a" + FLAG * 5), _SameHash("ab" + FLAG * 4)
    assert joined_characters(first) == _clusters(str(first))
    assert joined_characters(second) == _clusters(str(second)) == [(2, 4), (4, 6)]


def test_threads_pair_flags_each_in_their_own_text():
    """Two threads reading texts of one length and hash at once: each pairs its indicators from its own run's
    start. Reference: ``regex``'s ``\\X``."""
    texts = [_SameHash("a" + FLAG * 41), _SameHash("ab" + FLAG * 40)]
    wrong: list[str] = []

    def read(text: str) -> None:
        for _ in range(200):
            if joined_characters(text) != _clusters(str(text)):
                wrong.append(ascii(text[:4]))

    threads = [threading.Thread(target=read, args=(text,)) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong


@pytest.mark.parametrize(
    "text",
    ["\uabc0\uaaf6\uabc0", "\u1000\u1039\u1080", "\uaa60\u1039\uaa61", "\u1019\u1039\u108e x", "\u0915\u094d\u1cf5"],
)  # fmt: skip
def test_a_conjunct_joins_as_unicode_17s_consonants_do(text):
    """The Meetei Mayek virama (U+AAF6) and the Myanmar one (U+1039) joined no Meetei Mayek letter (U+ABC0..),
    Shan consonant (U+1080, U+1081, U+108E) or Myanmar Extended-A one (U+AA60..) after them, their blocks not
    being the linker's; and the Vedic linker U+1CF5, a letter, was read as a consonant a virama joins.
    Reference: ``regex``'s ``\\X`` (InCB=Consonant)."""
    assert joined_characters(text) == _clusters(text)


@pytest.mark.parametrize("before", ["", "a", "ab ", "\u0915\u094d"])
def test_a_cut_deep_in_a_long_flag_run_names_the_flag_it_cuts(before):
    """`cut_character` at every edge in a run of 41 flags (read back in doubling windows) names the flag the edge
    cuts, whole, or none at a flag's start. Reference: ``regex``'s ``\\X``."""
    from tokenpool.model.document_tokens import cut_character

    text = before + "\U0001f1eb\U0001f1f7" * 41 + "x"
    spans = [m.span() for m in regex.finditer(r"\X", text)]
    for start in range(len(before), len(text) - 3):
        want = next(((a, b) for a, b in spans if a < start < b), None)
        assert cut_character(text, start, start + 2) == want, start
