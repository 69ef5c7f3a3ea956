"""Holder framing and the output spool."""
import pytest

from roost.runtimes.process import holder_wire as wire
from roost.runtimes.process.holder import Spool


def test_frames_survive_byte_by_byte_delivery():
    stream = (wire.encode_offset(wire.RESUME, 12345) + wire.encode_frame(wire.STDIN, b"say hi\n")
              + wire.encode_signal(15) + wire.encode_frame(wire.KILL)
              + wire.encode_json(wire.EXITED, {"code": 3}))
    decoder = wire.FrameDecoder()
    frames = [f for i in range(len(stream)) for f in decoder.feed(stream[i:i + 1])]
    assert [f.type for f in frames] == [wire.RESUME, wire.STDIN, wire.SIGNAL, wire.KILL,
                                       wire.EXITED]
    assert wire.decode_offset(frames[0]) == 12345
    assert frames[1].payload == b"say hi\n"
    assert wire.decode_signal(frames[2]) == 15
    assert wire.decode_json(frames[4]) == {"code": 3}


def test_oversized_frame_is_rejected_from_its_header():
    header = wire.FRAME_HEADER.pack(wire.MAX_FRAME_BYTES + 1, wire.STDIN)
    with pytest.raises(wire.WireError):
        wire.FrameDecoder().feed(header)
    with pytest.raises(wire.WireError):
        wire.encode_frame(wire.STDIN, b"x" * (wire.MAX_FRAME_BYTES + 1))


def test_unknown_frame_type_is_rejected():
    with pytest.raises(wire.WireError):
        wire.FrameDecoder().feed(wire.FRAME_HEADER.pack(0, 99))


def test_output_frame_carries_records_and_offset():
    records = wire.encode_record(wire.STDOUT, b"out\n") + wire.encode_record(wire.STDERR, b"err")
    [frame] = wire.FrameDecoder().feed(wire.encode_output(77, records))
    offset, got = wire.decode_output(frame)
    assert offset == 77 and got == records
    assert list(wire.iter_records(got)) == [(wire.STDOUT, b"out\n"), (wire.STDERR, b"err")]


def test_whole_records_length_stops_before_a_torn_record():
    one = wire.encode_record(wire.STDOUT, b"abc")
    assert wire.whole_records_length(one + one[:4]) == len(one)
    with pytest.raises(wire.WireError):
        list(wire.iter_records(one + one[:4]))


def test_spool_reads_back_from_any_record_offset(tmp_path):
    spool = Spool(str(tmp_path), segment_bytes=1 << 20)
    spool.append(wire.STDOUT, b"first\n")
    middle = spool.end
    spool.append(wire.STDERR, b"second\n")
    offset, records = spool.read(middle, 1 << 20)
    assert offset == middle
    assert list(wire.iter_records(records)) == [(wire.STDERR, b"second\n")]
    assert spool.read(spool.end, 1 << 20) == (spool.end, b"")


def test_spool_is_bounded_to_two_segments_and_skips_what_it_dropped(tmp_path):
    spool = Spool(str(tmp_path), segment_bytes=100)
    for i in range(100):
        spool.append(wire.STDOUT, f"line {i}\n".encode())
    assert len([n for n in tmp_path.iterdir() if n.name.startswith("spool.")]) == 2
    offset, records = spool.read(0, 1 << 20)
    assert offset > 0  # the oldest output is gone; reading resumes at the oldest kept
    lines = []
    while records:
        lines += [d for _, d in wire.iter_records(records)]
        offset, records = spool.read(offset + len(records), 1 << 20)
    assert lines[-1] == b"line 99\n"
    assert len(lines) < 100


def test_spool_read_returns_whole_records_within_max_bytes(tmp_path):
    spool = Spool(str(tmp_path))
    for _ in range(10):
        spool.append(wire.STDOUT, b"x" * 100)
    _, records = spool.read(0, 250)
    assert len(records) == 2 * (wire.RECORD_HEADER.size + 100)


def test_spool_left_by_a_gone_holder_can_be_reopened(tmp_path):
    spool = Spool(str(tmp_path), segment_bytes=50)
    for i in range(10):
        spool.append(wire.STDOUT, f"{i}\n".encode())
    end = spool.end
    spool.close()
    reopened = Spool.open_existing(str(tmp_path))
    assert reopened.end == end
    offset, records = reopened.read(end - wire.RECORD_HEADER.size - 2, 1 << 20)
    assert list(wire.iter_records(records)) == [(wire.STDOUT, b"9\n")]
    reopened.remove()
    assert not list(tmp_path.iterdir())
