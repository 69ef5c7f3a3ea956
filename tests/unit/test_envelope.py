from hypothesis import given, strategies as st

from roost.protocol.envelope import MAX_DECODED_MESSAGE_BYTES, Envelope, parse


def test_parse_joins_args_and_accepts_null_and_missing():
    assert parse('{"event":"send command","args":["say ","hi"]}') == Envelope("send command", "say hi")
    assert parse('{"event":"send logs","args":[null]}') == Envelope("send logs", "")
    assert parse('{"event":"send logs","args":[]}') == Envelope("send logs", "")
    assert parse('{"event":"send logs"}') == Envelope("send logs", "")


def test_malformed_frames_are_dropped():
    for bad in ["", "not json", "[]", "1", '{"args":[]}', '{"event":1}', '{"event":"auth","args":[1]}',
                '{"event":"auth","args":"x"}', '{"event":"auth","args":[{"a":1}]}']:
        assert parse(bad) is None, bad


def test_oversized_decoded_message_dropped():
    big = '{"event":"send command","args":["' + "x" * MAX_DECODED_MESSAGE_BYTES + '"]}'
    assert parse(big) is None


@given(st.text(max_size=300))
def test_parse_never_raises(text):
    parse(text)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=20))
def test_parse_never_raises_on_any_json(doc):
    import json
    result = parse(json.dumps(doc))
    assert result is None or isinstance(result.event, str)


@given(st.text(max_size=200), st.integers(min_value=1, max_value=2**40))
def test_console_frame_template_matches_the_generic_serializer(line, seq):
    import json as _json
    from roost.protocol import events
    assert events.console_frame(line) == events.frame(events.CONSOLE_OUTPUT, line)
    assert _json.loads(events.console_frame_seq(line, seq)) == {"event": "console output", "args": [line], "seq": seq}
