"""Variable rules: Laravel semantics, PCRE patterns, and never crashing on what eggs contain."""
import re
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.install.rules import (
    MISSING,
    UnsupportedPattern,
    VariableValidationError,
    compile_php_regex,
    parse_rules,
    rule_problems,
    validate_value,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ok(value, rules):
    return validate_value("VAR", value, rules).ok


def failed_rules(value, rules):
    return [f.rule for f in validate_value("VAR", value, rules).failures]


# --- parsing -------------------------------------------------------------------------------

def test_rule_strings_split_on_bars_and_drop_empty_parts():
    assert [r.name for r in parse_rules("required|string|max:20|")] == ["required", "string", "max"]
    assert parse_rules("") == [] and parse_rules(None) == [] and parse_rules({}) == []
    assert [r.params for r in parse_rules("between:1,10")] == [("1", "10")]


def test_rule_names_are_normalised_like_laravel():
    # studly-cased method names are case-insensitive in PHP; int/bool are Laravel's aliases
    assert [r.name for r in parse_rules(["alpha_dash", "AlphaDash", "int", "bool"])] == \
        ["alphadash", "alphadash", "integer", "boolean"]


def test_in_parameters_are_csv():
    assert parse_rules('in:"a,b",c')[0].params == ("a,b", "c")
    assert ok("a,b", 'in:"a,b",c') and not ok("a", 'in:"a,b",c')


def test_a_regex_holding_a_bar_is_kept_whole():
    rules = parse_rules("required|regex:/^(foo|bar)$/|max:5")
    assert [r.raw for r in rules] == ["required", "regex:/^(foo|bar)$/", "max:5"]
    assert ok("bar", "required|regex:/^(foo|bar)$/|max:5")
    assert not ok("baz", "required|regex:/^(foo|bar)$/|max:5")


def test_array_rules_are_one_rule_per_element():
    assert ok("OpenTTD", ["required", "string", "max:20"])
    assert failed_rules("x" * 21, ["required", "string", "max:20"]) == ["max:20"]


# --- Laravel semantics -------------------------------------------------------------------

def test_required_and_empty_values():
    assert failed_rules("", "required|string") == ["required"]  # stops after the implicit rule fails
    assert failed_rules("   ", "required") == ["required"]
    assert failed_rules(MISSING, "required") == ["required"]
    assert ok("x", "required")


def test_empty_values_skip_non_implicit_rules_when_nullable():
    assert ok("", "nullable|string|max:3")
    assert ok(None, "nullable|integer")


def test_empty_string_becomes_null_as_in_the_panel():
    # ConvertEmptyStringsToNull: a non-nullable `string` variable left empty fails `string`
    assert failed_rules("", "string|max:20") == ["string"]
    # …unless the caller opts out of the panel's request pipeline
    assert validate_value("V", "", "string|max:20", normalize=False).ok


def test_values_are_trimmed_first():
    assert ok("  abc  ", "required|string|max:3")


def test_max_min_are_lengths_for_strings_and_values_for_numbers():
    assert not ok("12345", "string|max:4")
    assert ok("12345", "numeric|max:99999") and not ok("123456", "numeric|max:99999")
    assert ok("25565", "required|integer|between:1024,65535")
    assert not ok("80", "required|integer|between:1024,65535")
    assert ok("abcd", "min:4") and not ok("abc", "min:4")
    assert not ok("7778", "required|numeric|max:8")  # a real egg's mistake (meant digits)


def test_numeric_rules_only_apply_numeric_sizes_to_numeric_values():
    # a non-numeric value under `numeric` fails `numeric`, and max compares its length
    assert failed_rules("abc", "numeric|max:5") == ["numeric"]


def test_integer_follows_filter_var():
    for good in ("0", "-5", "+5", "42", " 42 ", 7, True):
        assert ok(good, "integer"), good
    for bad in ("4.2", "042", "1e3", "abc", "9223372036854775808", False, 1.5):
        assert not ok(bad, "integer"), bad


def test_numeric_follows_is_numeric():
    for good in ("1", "-1.5", ".5", "1.", "1e5", " 1", "1 ", 3, 2.5):
        assert ok(good, "numeric"), good
    for bad in ("abc", "1e", "0x1A", "--1", True):
        assert not ok(bad, "numeric"), bad


def test_boolean_accepts_only_laravel_values():
    for good in ("0", "1", 0, 1, True, False):
        assert ok(good, "boolean"), good
    for bad in ("true", "false", "yes", "2"):
        assert not ok(bad, "boolean"), bad


def test_in_compares_like_php():
    assert ok("true", "in:true,false") and not ok("TRUE", "in:true,false")
    assert ok("1.0", "in:1,2")  # numeric strings compare as numbers in PHP 8
    assert not ok("moon", "nullable|string|in:,Moon,Mars")
    assert ok("x", "not_in:a,b") and not ok("a", "not_in:a,b")


def test_digits_and_digits_between():
    assert ok("123456789012345678", "required|digits_between:17,18")
    assert not ok("Change This To Your Discord User ID", "required|digits_between:17,18")
    assert ok("1234", "digits:4") and not ok("123", "digits:4") and not ok("12a4", "digits:4")


def test_alpha_family_is_unicode():
    assert ok("Héllo", "alpha") and not ok("hello1", "alpha")
    assert ok("abc123", "alpha_num") and not ok("ab-c", "alpha_num")
    assert ok("my-server_1", "alpha_dash") and not ok("my server", "alpha_dash")
    assert not ok("Héllo", "alpha:ascii")


def test_url_ip_and_size():
    assert ok("https://example.com/x?y=1", "url") and not ok("not a url", "url")
    assert ok("http://127.0.0.1:8080", "url")
    assert ok("10.0.0.1", "ip") and ok("::1", "ipv6") and not ok("::1", "ipv4") and not ok("300.1.1.1", "ip")
    assert ok("abcd", "size:4") and ok("4", "integer|size:4") and not ok("5", "integer|size:4")


def test_gt_and_friends_with_numbers():
    assert ok("1", "nullable|integer|gt:0") and not ok("0", "nullable|integer|gt:0")
    assert ok("5", "lte:5") and not ok("6", "lte:5")


def test_every_failure_names_the_variable_and_the_rule():
    res = validate_value("SERVER_JARFILE", "server.zip", r"required|regex:/^([\w\d._-]+)(\.jar)$/")
    assert [(f.variable, f.rule) for f in res.failures] == [("SERVER_JARFILE", r"regex:/^([\w\d._-]+)(\.jar)$/")]
    assert "SERVER_JARFILE" in str(res.failures[0]) and "regex:" in str(res.failures[0])
    err = VariableValidationError(res.failures)
    assert "SERVER_JARFILE" in str(err)


def test_bail_stops_at_the_first_failure():
    assert failed_rules("abc", "bail|integer|min:5") == ["integer"]
    assert failed_rules("abc", "integer|min:5") == ["integer", "min:5"]


def test_unknown_and_unverifiable_rules_are_reported_not_failed():
    res = validate_value("V", "x", "required|frobnicate:3|exists:users,id|same:OTHER")
    assert res.ok
    assert len(res.unchecked) == 3 and "frobnicate" in res.unchecked[0]
    assert rule_problems("required|frobnicate") == ["`frobnicate`: unknown rule"]
    assert rule_problems("required|string|max:20|in:a,b|regex:/^a$/") == []


def test_bad_parameters_are_unchecked():
    assert validate_value("V", "abc", "max:ten").unchecked
    assert validate_value("V", "abc", "between:1").unchecked


# --- PCRE patterns -------------------------------------------------------------------------

@pytest.mark.parametrize("pattern,good,bad", [
    (r"/^([\w\d._-]+)(\.jar)$/", ["server.jar", "paper-1.20.jar"], ["server.zip", "a b.jar"]),
    (r"/^(\w{1,20})$/", ["abc_1"], ["a" * 21, "a-b"]),
    (r"([a-z-0-9]+$)", ["abc-1", "x ab"], ["ABC", ""]),  # ( ) as delimiters, as PHP allows
    (r"/^(?:true)?(?:false)?\b/", ["true", "false"], []),
    (r"/^([a-z0-9]{32} ?)*$/", ["a" * 32 + " " + "b" * 32, ""], ["abc"]),
    (r"#^\d+$#", ["123"], ["12a"]),
    (r"/^[a-z]+$/i", ["ABC"], ["AB1"]),
    (r"{^a\{2\}$}", ["a{2}"], ["aa"]),
    (r"/^\p{L}+$/u", None, None),  # Unicode properties: not translatable
])
def test_php_patterns(pattern, good, bad):
    if good is None:
        with pytest.raises(UnsupportedPattern):
            compile_php_regex(pattern)
        assert validate_value("V", "x", f"regex:{pattern}").unchecked
        return
    for v in good:
        assert ok(v, [f"regex:{pattern}"]) or v == "", (pattern, v)
    for v in bad:
        assert not ok(v, [f"regex:{pattern}"]), (pattern, v)


def test_pcre_dollar_and_anchors():
    assert compile_php_regex("/^a$/").search(b"a\n")  # $ before a final newline, as PCRE
    assert not compile_php_regex("/^a$/D").search(b"a\n")
    assert not compile_php_regex(r"/^a\z/").search(b"a\n")
    assert compile_php_regex(r"/^a\Z/").search(b"a\n")
    assert compile_php_regex("/b/A").search(b"ab") is None


def test_without_u_patterns_match_bytes():
    # /^.{2}$/ on "é" (2 UTF-8 bytes) matches in PHP without the u modifier
    assert ok("é", ["regex:/^.{2}$/"])
    assert ok("é", ["regex:/^.{1}$/u"])


def test_named_groups_and_classes_translate():
    p = compile_php_regex(r"/^(?<word>[[:alpha:]]+)-\k<word>$/")
    assert p.search(b"ab-ab") and not p.search(b"ab-cd")
    assert compile_php_regex(r"/^[\h]+$/").search(b" \t")


@pytest.mark.parametrize("bad", ["/abc", "abc", "/a/g", "/(?R)/", r"/\K/", "/(*FAIL)/", "/[a/"])
def test_invalid_or_untranslatable_patterns_raise(bad):
    with pytest.raises(UnsupportedPattern):
        compile_php_regex(bad)


# --- properties ------------------------------------------------------------------------------

values = st.one_of(st.text(max_size=30), st.integers(-10**20, 10**20), st.floats(allow_nan=False),
                   st.booleans(), st.none(), st.just(MISSING))
rule_text = st.text(alphabet=string.ascii_letters + string.digits + "|:,_-/^$[]().*+?\\{} ", max_size=60)


@FAST
@given(value=values, rules=st.one_of(rule_text, st.lists(rule_text, max_size=4)))
def test_never_raises_on_any_rule_or_value(value, rules):
    res = validate_value("V", value, rules)
    assert isinstance(res.ok, bool)


@FAST
@given(value=st.text(alphabet=string.ascii_letters + " ", min_size=1, max_size=40), limit=st.integers(0, 40))
def test_max_on_strings_is_the_trimmed_length(value, limit):
    trimmed = value.strip()
    if not trimmed:
        return
    assert ok(value, f"required|string|max:{limit}") == (len(trimmed) <= limit)
    assert ok(value, f"required|string|min:{limit}") == (len(trimmed) >= limit)


@FAST
@given(v=st.integers(-10**6, 10**6), lo=st.integers(-1000, 1000), hi=st.integers(-1000, 1000))
def test_between_on_integers_is_the_value(v, lo, hi):
    assert ok(str(v), f"required|integer|between:{lo},{hi}") == (lo <= v <= hi)
    assert ok(str(v), f"required|numeric|max:{hi}") == (v <= hi)


@FAST
@given(choices=st.lists(st.text(alphabet=string.ascii_letters, min_size=1, max_size=8), min_size=1, max_size=6),
       value=st.text(alphabet=string.ascii_letters, min_size=1, max_size=8))
def test_in_is_membership(choices, value):
    assert ok(value, "required|string|in:" + ",".join(choices)) == (value in choices)
    assert ok(value, "required|string|not_in:" + ",".join(choices)) == (value not in choices)


@FAST
@given(value=st.text(max_size=20))
def test_alpha_dash_matches_its_definition(value):
    import unicodedata
    trimmed = value.strip(" \t\n\r\0\x0b")  # the panel's TrimStrings
    if not trimmed:
        return
    expected = all(c in "_-" or unicodedata.category(c)[0] in "LMN" for c in trimmed)
    assert ok(value, "alpha_dash") == expected


simple_atoms = st.sampled_from(["a", "b", "[a-c]", "[^a]", r"\d", r"\w", ".", "(ab)", "(?:a|b)", r"\.", "x"])
quant = st.sampled_from(["", "*", "+", "?", "{2}", "{1,3}"])


@FAST
@given(atoms=st.lists(st.tuples(simple_atoms, quant), min_size=1, max_size=5), anchor=st.booleans(),
       subject=st.text(alphabet="abcx.1 ", max_size=12))
def test_simple_patterns_agree_with_python_re(atoms, anchor, subject):
    body = "".join(a + q for a, q in atoms)
    body = f"^{body}$" if anchor else body
    ours = compile_php_regex("/" + body + "/")
    assert bool(ours.search(subject.encode())) == bool(re.search(body.encode(), subject.encode()))
