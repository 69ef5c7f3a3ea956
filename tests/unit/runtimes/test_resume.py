"""Checkpoints in the output spool: resuming gives every line exactly once."""
from hypothesis import given, settings, strategies as st

from roost.runtimes.lines import LineSplitter
from roost.runtimes.process import holder_wire as wire
from roost.runtimes.process.resume import ResumeMarks, iter_records_at

chunks = st.lists(
    st.tuples(st.sampled_from([wire.STDOUT, wire.STDERR]),
              st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\r", b"\r\n", b"\xff", b"long-" * 5]), min_size=1, max_size=8).map(b"".join)),
    min_size=1, max_size=30)


def spool_of(parts):
    return b"".join(wire.encode_record(s, d) for s, d in parts)


def run(spool: bytes, start: int, marks: ResumeMarks, splitters, upto: int | None = None):
    """Process records from `start`; stop before the record at index `upto` (None: all)."""
    lines = []
    for i, (off, end, stream, data) in enumerate(iter_records_at(spool[start:], start)):
        if upto is not None and i >= upto:
            break
        fed = marks.accept(stream, off, end, data)
        if fed:
            lines += [(stream, ln) for ln in splitters[stream].feed(fed)]
        marks.settle(stream, splitters[stream])
    return lines


def fresh():
    return ResumeMarks("inst", 0), {wire.STDOUT: LineSplitter(), wire.STDERR: LineSplitter()}


@settings(max_examples=300, deadline=None)
@given(chunks, st.integers(min_value=0, max_value=30))
def test_resume_from_any_checkpoint_gives_each_line_once(parts, cut):
    spool = spool_of(parts)
    marks, splitters = fresh()
    straight = run(spool, 0, marks, splitters)

    marks, splitters = fresh()
    before = run(spool, 0, marks, splitters, upto=cut)
    cp = marks.checkpoint(splitters)
    restored = ResumeMarks.from_checkpoint(cp, "inst")
    assert restored is not None
    marks2, splitters2 = restored
    after = run(spool, ResumeMarks.resume_offset(cp), marks2, splitters2)
    assert before + after == straight
    # per stream the order is exact (streams interleave only at record granularity)
    for s in (wire.STDOUT, wire.STDERR):
        assert [l for t, l in before + after if t == s] == [l for t, l in straight if t == s]


def test_checkpoint_of_another_instance_is_ignored():
    marks, splitters = fresh()
    assert ResumeMarks.from_checkpoint(marks.checkpoint(splitters), "other") is None
    assert ResumeMarks.from_checkpoint({"v": 99}, "inst") is None
    assert ResumeMarks.from_checkpoint(None, "inst") is None
