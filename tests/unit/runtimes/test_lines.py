"""LineSplitter: line ends, partial lines, over-long lines, bad UTF-8, chunking invariance."""
import re

from hypothesis import given, settings, strategies as st

from roost.runtimes.lines import MAX_LINE_BYTES, LineSplitter


def split_all(chunks: list[bytes], max_line_bytes: int = MAX_LINE_BYTES) -> list[str]:
    splitter = LineSplitter(max_line_bytes)
    lines = []
    for chunk in chunks:
        lines += splitter.feed(chunk)
    return lines + splitter.flush()


def test_newline_crlf_and_lone_cr_each_end_one_line():
    assert split_all([b"a\nb\r\nc\rd\n"]) == ["a", "b", "c", "d"]


def test_empty_lines_are_kept():
    assert split_all([b"\n\r\n\n"]) == ["", "", ""]


def test_partial_line_waits_for_its_end():
    splitter = LineSplitter()
    assert splitter.feed(b"hel") == []
    assert splitter.feed(b"lo\nwor") == ["hello"]
    assert splitter.flush() == ["wor"]


def test_crlf_split_across_chunks_is_one_line_end():
    splitter = LineSplitter()
    assert splitter.feed(b"a\r") == ["a"]
    assert splitter.feed(b"\nb\n") == ["b"]


def test_cr_at_chunk_end_followed_by_text_ends_the_line():
    assert split_all([b"10%\r", b"20%\r", b"", b"\n"]) == ["10%", "20%"]


def test_progress_bar_becomes_separate_lines():
    assert split_all([b"[=  ] 10%\r[== ] 50%\r[===] 100%\n"]) == [
        "[=  ] 10%", "[== ] 50%", "[===] 100%"]


def test_long_line_is_cut_and_its_rest_discarded():
    long = b"x" * (MAX_LINE_BYTES + 5000)
    assert split_all([long + b"\nnext\n"]) == ["x" * MAX_LINE_BYTES, "next"]


def test_line_of_exactly_max_bytes_is_whole():
    assert split_all([b"y" * MAX_LINE_BYTES + b"\n"]) == ["y" * MAX_LINE_BYTES]


def test_long_line_cut_emits_before_the_line_ends():
    splitter = LineSplitter(10)
    assert splitter.feed(b"0123456789abc") == ["0123456789"]
    assert splitter.feed(b"def\r\nok") == []
    assert splitter.flush() == ["ok"]


def test_cut_never_splits_a_utf8_character():
    # "é" is 2 bytes: 9 ASCII + "é" crosses the 10-byte limit, so the cut backs off to 9.
    assert split_all([b"123456789\xc3\xa9tail\n"], 10) == ["123456789"]
    # A 4-byte emoji straddling the limit is dropped whole, never half-decoded.
    assert split_all(["12345678😀zz\n".encode()], 10) == ["12345678"]


def test_invalid_utf8_is_replaced():
    assert split_all([b"bad \xff\xfe ok\n"]) == ["bad \ufffd\ufffd ok"]


def test_utf8_character_split_across_chunks_decodes_whole():
    data = "día\n".encode()
    assert split_all([data[:2], data[2:]]) == ["día"]


def test_flush_after_discarded_tail_emits_nothing():
    assert split_all([b"z" * 20], 10) == ["z" * 10]


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


line_bytes = st.lists(
    st.sampled_from([b"a", b"bc", b"\n", b"\r", b"\r\n", b"\xc3\xa9", b"\xf0\x9f\x98\x80",
                     b"\xff", b"\x80", b" "]),
    max_size=80,
).map(b"".join)


@settings(max_examples=500)
@given(data=line_bytes, cuts=st.lists(st.integers(min_value=0), max_size=20),
       max_line=st.integers(min_value=4, max_value=16))
def test_any_chunking_gives_the_same_lines(data, cuts, max_line):
    assert split_all(chunked(data, cuts), max_line) == split_all([data], max_line)


@given(text=st.lists(st.text(alphabet=st.characters(blacklist_characters="\r\n",
                                                      blacklist_categories=("Cs",)),
                             max_size=20), max_size=10),
       ends=st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=10, max_size=10))
def test_short_valid_lines_match_a_regex_split(text, ends):
    data = "".join(t + e for t, e in zip(text, ends)).encode()
    assert split_all([data]) == re.split("\r\n|\r|\n", data.decode())[:-1]
