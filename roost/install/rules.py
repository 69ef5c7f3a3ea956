"""Egg variable rules: Laravel's validation rules, checked the way a panel checks them.

Eggs give each variable a `rules` value such as `"required|string|max:20"` (or a list of
rule strings). A panel validates a server's variable values with Laravel; this module does
the same checks with the same semantics, without PHP:

- a rule string is split on `|` (a `regex:` pattern that holds a `|` is put back together
  when its delimiters are not closed), each part is `name` or `name:parameters`; the name is
  compared case- and separator-insensitively (`alpha_dash` = `AlphaDash`), `int`/`bool` are
  Laravel's aliases of `integer`/`boolean`, and parameters are CSV (`in:"a,b",c`);
- an empty value (`""`, only whitespace, or None) is only checked by implicit rules
  (`required`, `present`, `filled`, `accepted`, ...). Like the panel's request pipeline
  (TrimStrings + ConvertEmptyStringsToNull), strings are trimmed and `""` becomes null
  first, so a non-`nullable` `string` variable left empty fails `string`;
- `max`/`min`/`between`/`size`/`gt`/... compare the string length, or the number when the
  variable also has `numeric`/`integer`/`decimal` and the value is numeric;
- `regex:`/`not_regex:` take a PHP (PCRE) pattern with delimiters and modifiers; it is
  translated to Python `re` (without the `u` modifier it is matched on UTF-8 bytes, as PCRE
  does). Patterns using PCRE features Python lacks are reported as unchecked.

Rules roost cannot check (unknown names, rules comparing with other fields or a database,
invalid parameters, untranslatable patterns) never fail a value and never raise: they are
listed in `ValidationResult.unchecked`.

Sans-I/O: no files, no clock.
"""
from __future__ import annotations

import csv
import ipaddress
import json
import re
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "MISSING",
    "Rule",
    "RuleFailure",
    "ValidationResult",
    "VariableValidationError",
    "UnsupportedPattern",
    "parse_rules",
    "rule_problems",
    "validate_value",
    "validate_values",
    "normalize_value",
    "compile_php_regex",
]


class _Missing:
    """The value of a variable that was not given at all (`present`/`required` fail)."""

    _instance: "_Missing | None" = None

    def __new__(cls) -> "_Missing":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()

# Longest value a regex rule is run on: Python's `re` has no backtracking limit (PCRE has
# pcre.backtrack_limit), so a bound on the subject keeps a pathological pattern cheap.
MAX_REGEX_SUBJECT_CHARS = 4096


@dataclass(frozen=True)
class Rule:
    """One rule of a variable: `name` normalised (lower case, no `_`/`-`), `params` as parsed."""

    raw: str
    name: str
    params: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuleFailure:
    variable: str
    rule: str  # the rule as written in the egg, e.g. "max:20"
    message: str

    def __str__(self) -> str:
        return f"{self.variable}: {self.message} (rule `{self.rule}`)"


@dataclass
class ValidationResult:
    variable: str
    failures: list[RuleFailure] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # rules as written, with the reason

    @property
    def ok(self) -> bool:
        return not self.failures


class VariableValidationError(ValueError):
    """One or more variable values break their rules (the API answers 422)."""

    def __init__(self, failures: list[RuleFailure]):
        self.failures = list(failures)
        super().__init__("; ".join(str(f) for f in self.failures) or "invalid variables")


class UnsupportedPattern(ValueError):
    """A PCRE pattern roost cannot translate faithfully to Python `re`."""


# ---------------------------------------------------------------------------------------------
# Parsing rule strings


def _norm_name(name: str) -> str:
    n = re.sub(r"[\s_\-]", "", name.strip()).lower()
    return {"int": "integer", "bool": "boolean"}.get(n, n)


def _split_params(name: str, param: str) -> tuple[str, ...]:
    if name in ("regex", "notregex"):
        return (param,)
    if param == "":
        return ("",)
    # str_getcsv: comma separated, double quotes group, no trimming.
    return tuple(next(csv.reader([param], skipinitialspace=False)))


def _pattern_closed(param: str) -> bool:
    """Whether a `regex:` parameter holds a complete delimited pattern."""
    try:
        _split_delimiters(param)
        return True
    except UnsupportedPattern:
        return False


def _split_rule_string(rules: str) -> list[str]:
    parts = rules.split("|")
    out: list[str] = []
    i = 0
    while i < len(parts):
        part = parts[i]
        name = _norm_name(part.split(":", 1)[0]) if ":" in part else ""
        if name in ("regex", "notregex"):
            j = i
            while not _pattern_closed(part.split(":", 1)[1]) and j + 1 < len(parts):
                j += 1
                part = part + "|" + parts[j]
            if _pattern_closed(part.split(":", 1)[1]):
                i = j
            else:
                part = parts[i]
        out.append(part)
        i += 1
    return out


def parse_rules(rules: Any) -> list[Rule]:
    """Parse an egg's `rules` (string, list of strings, None or an empty object) into rules.

    Empty parts (`"required|"`) are dropped, as Laravel drops them. Never raises for strings
    or lists of strings; other shapes raise `TypeError`.
    """
    if rules is None or (isinstance(rules, dict) and not rules):
        return []
    if isinstance(rules, str):
        raw_parts = _split_rule_string(rules)
    elif isinstance(rules, (list, tuple)):
        raw_parts = []
        for r in rules:
            if not isinstance(r, str):
                raise TypeError(f"rule {r!r} is not a string")
            raw_parts.append(r)  # an array element is one rule: a regex may hold `|`
    else:
        raise TypeError(f"rules must be a string or a list of strings, not {type(rules).__name__}")
    out = []
    for raw in raw_parts:
        if raw.strip() == "":
            continue
        if ":" in raw:
            name, param = raw.split(":", 1)
            n = _norm_name(name)
            out.append(Rule(raw=raw, name=n, params=_split_params(n, param)))
        else:
            out.append(Rule(raw=raw, name=_norm_name(raw)))
    return out


# ---------------------------------------------------------------------------------------------
# PHP semantics helpers

_PHP_WS = " \t\n\r\v\f"
_NUMERIC = re.compile(r"[ \t\n\r\v\f]*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?[ \t\n\r\v\f]*")
_INT_LIMIT = 2**63


def _is_numeric(v: Any) -> bool:
    """PHP is_numeric."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    if isinstance(v, float):
        return True
    return isinstance(v, str) and _NUMERIC.fullmatch(v) is not None


def _to_number(v: Any) -> Decimal:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
    return Decimal(str(v).strip(_PHP_WS))


def _php_str(v: Any) -> str:
    """PHP (string) cast of a scalar."""
    if v is None or v is MISSING:
        return ""
    if isinstance(v, bool):
        return "1" if v else ""
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return repr(v)
    if isinstance(v, (list, dict)):
        return "Array"
    return str(v)


def _filter_int(v: Any) -> bool:
    """PHP filter_var($v, FILTER_VALIDATE_INT) !== false."""
    if isinstance(v, bool):
        return v is True
    if isinstance(v, int):
        return -_INT_LIMIT <= v < _INT_LIMIT
    if isinstance(v, float):
        return v.is_integer() and -_INT_LIMIT <= v < _INT_LIMIT
    if not isinstance(v, str):
        return False
    s = v.strip(" \t\n\r\v\0")
    if not re.fullmatch(r"[+-]?(?:0|[1-9][0-9]*)", s):
        return False
    return -_INT_LIMIT <= int(s) < _INT_LIMIT


def _php_loose_str_eq(a: str, b: str) -> bool:
    """PHP 8 `==` between two strings: numerically when both are numeric strings."""
    if _is_numeric(a) and _is_numeric(b):
        try:
            return _to_number(a) == _to_number(b)
        except InvalidOperation:
            return a == b
    return a == b


def _unicode_all(s: str, cats: tuple[str, ...], extra: str = "") -> bool:
    return bool(s) and all(ch in extra or unicodedata.category(ch)[0] in cats for ch in s)


# ---------------------------------------------------------------------------------------------
# PCRE → Python re

_BRACKETS = {"(": ")", "[": "]", "{": "}", "<": ">"}
_POSIX = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "space": r" \t\n\r\f\x0b", "xdigit": "0-9A-Fa-f", "word": r"\w", "blank": r" \t",
    "cntrl": r"\x00-\x1f\x7f", "print": r"\x20-\x7e", "graph": r"\x21-\x7e",
    "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"), "ascii": r"\x00-\x7f",
}


def _split_delimiters(pattern: str) -> tuple[str, str]:
    """Split a PHP pattern `/body/flags` into body and modifiers."""
    p = pattern.lstrip(" \t\n\r\v\f")
    if not p:
        raise UnsupportedPattern("empty pattern")
    d = p[0]
    if d.isalnum() or d == "\\" or d == "\0":
        raise UnsupportedPattern(f"delimiter must not be alphanumeric or backslash: {d!r}")
    close = _BRACKETS.get(d, d)
    depth = 0
    i = 1
    while i < len(p):
        c = p[i]
        if c == "\\":
            i += 2
            continue
        if c == close and depth == 0:
            return p[1:i], p[i + 1:]
        if close != d:
            if c == d:
                depth += 1
            elif c == close:
                depth -= 1
        i += 1
    raise UnsupportedPattern(f"no ending delimiter {close!r}")


def _hexchar(code: int, as_bytes: bool) -> str:
    if as_bytes:
        if code > 0xFF:
            raise UnsupportedPattern("character code above 0xff needs the u modifier")
        return f"\\x{code:02x}"
    return f"\\U{code:08x}"


def _translate(body: str, *, dollar_end_only: bool, as_bytes: bool) -> str:
    out: list[str] = []
    i = 0
    n = len(body)
    in_class = False
    class_start = 0
    at_start = True  # for inline flags

    def escape_seq(j: int) -> tuple[str, int]:
        """Translate the escape at body[j] == '\\'; returns (text, next index)."""
        if j + 1 >= n:
            raise UnsupportedPattern("pattern ends with a backslash")
        c = body[j + 1]
        if c == "Q":
            end = body.find("\\E", j + 2)
            lit = body[j + 2:] if end < 0 else body[j + 2:end]
            text = "".join("\\" + ch if not ch.isalnum() and ch != "_" else ch for ch in lit)
            return text, (n if end < 0 else end + 2)
        if c == "E":
            return "", j + 2
        if c == "x":
            if j + 2 < n and body[j + 2] == "{":
                end = body.find("}", j + 3)
                if end < 0:
                    raise UnsupportedPattern("unterminated \\x{")
                try:
                    return _hexchar(int(body[j + 3:end], 16), as_bytes), end + 1
                except ValueError:
                    raise UnsupportedPattern("bad \\x{...}") from None
            m = re.match(r"[0-9a-fA-F]{1,2}", body[j + 2:])
            code = int(m.group(0), 16) if m else 0
            return _hexchar(code, True), j + 2 + (len(m.group(0)) if m else 0)
        if c == "o" and j + 2 < n and body[j + 2] == "{":
            end = body.find("}", j + 3)
            if end < 0:
                raise UnsupportedPattern("unterminated \\o{")
            try:
                return _hexchar(int(body[j + 3:end], 8), as_bytes), end + 1
            except ValueError:
                raise UnsupportedPattern("bad \\o{...}") from None
        if c == "c":
            if j + 2 >= n:
                raise UnsupportedPattern("\\c at end")
            return _hexchar(ord(body[j + 2].upper()) ^ 0x40, True), j + 3
        if c == "e":
            return "\\x1b", j + 2
        if c == "h":
            return ("[ \\t\\xa0]" if not in_class else " \\t\\xa0"), j + 2
        if c == "H":
            if in_class:
                raise UnsupportedPattern("\\H inside a class")
            return "[^ \\t\\xa0]", j + 2
        if c == "v":
            return ("[\\n\\x0b\\f\\r\\x85]" if not in_class else "\\n\\x0b\\f\\r\\x85"), j + 2
        if c == "V":
            if in_class:
                raise UnsupportedPattern("\\V inside a class")
            return "[^\\n\\x0b\\f\\r\\x85]", j + 2
        if c == "R" and not in_class:
            return "(?:\\r\\n|[\\n\\x0b\\f\\r\\x85])", j + 2
        if c == "z" and not in_class:
            return "\\Z", j + 2
        if c == "Z" and not in_class:
            return "(?=\\n?\\Z)", j + 2
        if c == "k" and not in_class:
            m = re.match(r"<(\w+)>|'(\w+)'|\{(\w+)\}", body[j + 2:])
            if not m:
                raise UnsupportedPattern("bad \\k reference")
            return f"(?P={m.group(1) or m.group(2) or m.group(3)})", j + 2 + len(m.group(0))
        if c == "g" and not in_class:
            m = re.match(r"\{(-?\d+|\w+)\}|(\d+)", body[j + 2:])
            if not m or (m.group(1) or "").startswith("-"):
                raise UnsupportedPattern("relative or subroutine \\g reference")
            ref = m.group(1) or m.group(2)
            return (f"\\{ref}" if ref.isdigit() else f"(?P={ref})"), j + 2 + len(m.group(0))
        if c in "pPXCKGN" or (c in "AzZRbB" and in_class and c != "b"):
            raise UnsupportedPattern(f"\\{c} is not supported")
        if c.isdigit() and c != "0" and not in_class:
            m = re.match(r"\d+", body[j + 1:])
            return "\\" + m.group(0), j + 1 + len(m.group(0))  # backreference
        if c == "0":
            m = re.match(r"[0-7]{0,2}", body[j + 2:])
            return _hexchar(int("0" + m.group(0), 8), True), j + 2 + len(m.group(0))
        if c.isalpha() and c not in "dDsSwWbBtnrfaA":
            raise UnsupportedPattern(f"\\{c} is not supported")
        if c == "/" or c == "'" or c == '"' or not (c.isalnum() or c == "\\" or c in ".^$|?*+()[]{}-&~#"):
            return re.escape(c), j + 2
        return "\\" + c, j + 2

    while i < n:
        c = body[i]
        if in_class:
            if c == "\\":
                t, i = escape_seq(i)
                out.append(t)
                continue
            if c == "]" and i > class_start:
                in_class = False
                out.append("]")
                i += 1
                continue
            if c == "[":
                m = re.match(r"\[:(\^?)(\w+):\]", body[i:])
                if m:
                    if m.group(1) or m.group(2) not in _POSIX:
                        raise UnsupportedPattern(f"POSIX class {m.group(0)} is not supported")
                    out.append(_POSIX[m.group(2)])
                    i += len(m.group(0))
                    continue
                out.append("\\[")
                i += 1
                continue
            if c in "&~|":
                out.append("\\" + c)
                i += 1
                continue
            if c == "-" and out and out[-1] == "-":
                out.append("\\-")
                i += 1
                continue
            out.append(c)
            i += 1
            continue
        # outside a class
        if c == "\\":
            t, i = escape_seq(i)
            out.append(t)
            at_start = False
            continue
        if c == "[":
            in_class = True
            out.append("[")
            i += 1
            if i < n and body[i] == "^":
                out.append("^")
                i += 1
            class_start = i
            if i < n and body[i] == "]":  # a leading ] is literal
                out.append("\\]")
                i += 1
                class_start = i - 1
            continue
        if c == "(":
            rest = body[i:]
            if rest.startswith("(*"):
                raise UnsupportedPattern("backtracking verbs are not supported")
            m = re.match(r"\(\?<(\w+)>", rest) or re.match(r"\(\?'(\w+)'", rest)
            if m:
                out.append(f"(?P<{m.group(1)}>")
                i += len(m.group(0))
                at_start = False
                continue
            if re.match(r"\(\?(?:R|[+-]?\d|&|P>|\||C)", rest):
                raise UnsupportedPattern("recursion, subroutines and branch reset are not supported")
            m = re.match(r"\(\?([a-zA-Z^-]*)\)", rest)
            if m:
                flags = m.group(1)
                if not at_start or not re.fullmatch(r"[imsx]*", flags):
                    raise UnsupportedPattern(f"inline flags {m.group(0)} are only supported at the start")
                out.append(m.group(0))
                i += len(m.group(0))
                continue
            m = re.match(r"\(\?([a-zA-Z]*)(?:-([a-zA-Z]*))?:", rest)
            if m and (m.group(1) or m.group(2)):
                if not re.fullmatch(r"[imsx]*", (m.group(1) or "") + (m.group(2) or "")):
                    raise UnsupportedPattern(f"inline flags {m.group(0)} are not supported")
        if c == "{" and re.match(r"\{,\d*\}", body[i:]):
            out.append("\\{")  # PCRE (as in PHP 8) reads {,n} literally; Python as {0,n}
            i += 1
            at_start = False
            continue
        if c == "$" and dollar_end_only:
            out.append("\\Z")
            i += 1
            at_start = False
            continue
        out.append(c)
        i += 1
        at_start = False
    if in_class:
        raise UnsupportedPattern("missing terminating ] for character class")
    return "".join(out)


def compile_php_regex(pattern: str) -> "re.Pattern[str] | re.Pattern[bytes]":
    """Compile a PHP `preg_match` pattern (with delimiters) to a Python regex.

    Without the `u` modifier the result is a bytes pattern: match it against UTF-8 bytes.
    Raises `UnsupportedPattern` for anything PHP would refuse or Python cannot do the same way.
    """
    body, mods = _split_delimiters(pattern)
    flags = 0
    unicode = False
    dollar_end_only = False
    anchored = False
    for m in mods:
        if m == "i":
            flags |= re.IGNORECASE
        elif m == "m":
            flags |= re.MULTILINE
        elif m == "s":
            flags |= re.DOTALL
        elif m == "x":
            flags |= re.VERBOSE
        elif m == "u":
            unicode = True
        elif m == "D":
            dollar_end_only = True
        elif m == "A":
            anchored = True
        elif m in "SX\n\r \t":
            pass
        else:
            raise UnsupportedPattern(f"modifier {m!r} is not supported")
    if flags & re.MULTILINE:
        dollar_end_only = False  # PCRE ignores D with m
    py = _translate(body, dollar_end_only=dollar_end_only, as_bytes=not unicode)
    if anchored:
        py = "\\A(?:" + py + ("\n)" if flags & re.VERBOSE else ")")
    try:
        if unicode:
            return re.compile(py, flags)
        return re.compile(py.encode("utf-8"), flags)
    except (re.error, UnicodeEncodeError, OverflowError) as e:
        raise UnsupportedPattern(f"not a valid pattern: {e}") from None


def _regex_search(pattern: "re.Pattern[Any]", value: str) -> bool:
    subject: Any = value if isinstance(pattern.pattern, str) else value.encode("utf-8", "surrogatepass")
    return pattern.search(subject) is not None


# ---------------------------------------------------------------------------------------------
# The rules

IMPLICIT = {
    "accepted", "acceptedif", "declined", "declinedif", "filled", "missing", "missingif",
    "missingunless", "missingwith", "missingwithall", "present", "required", "requiredif",
    "requiredifaccepted", "requiredunless", "requiredwith", "requiredwithall",
    "requiredwithout", "requiredwithoutall", "presentif", "presentunless", "presentwith",
    "presentwithall",
}
NUMERIC_RULES = {"numeric", "integer", "decimal"}
MARKERS = {"nullable", "sometimes", "bail"}
# Rules that compare with other fields, a database, files or dates: never checked here.
OTHER_FIELDS = {
    "acceptedif", "declinedif", "requiredif", "requiredifaccepted", "requiredunless",
    "requiredwith", "requiredwithall", "requiredwithout", "requiredwithoutall", "same",
    "different", "confirmed", "exists", "unique", "missingif", "missingunless", "missingwith",
    "missingwithall", "presentif", "presentunless", "presentwith", "presentwithall",
    "prohibitedif", "prohibitedunless", "prohibits", "excludeif", "excludeunless",
    "excludewith", "excludewithout", "inarray", "file", "image", "mimes", "mimetypes",
    "dimensions", "extensions", "date", "dateformat", "dateequals", "after", "afterorequal",
    "before", "beforeorequal", "currentpassword", "password", "activeurl", "enum", "timezone",
    "distinct", "requiredarraykeys", "exclude", "prohibited", "missing",
}


class _Unchecked(Exception):
    pass


def _empty(value: Any) -> bool:
    return value is None or value is MISSING or (isinstance(value, str) and _php_trim(value) == "") \
        or (isinstance(value, (list, dict)) and not value)


def _size(value: Any, numeric: bool) -> Decimal:
    if numeric and _is_numeric(value):
        return _to_number(value)
    if isinstance(value, (list, dict)):
        return Decimal(len(value))
    return Decimal(len(_php_str(value)))


def _num_param(p: str) -> Decimal:
    if not _is_numeric(p):
        raise _Unchecked(f"parameter {p!r} is not a number")
    return _to_number(p)


def _need(params: tuple[str, ...], count: int) -> None:
    if len(params) < count or any(p == "" for p in params[:count]):
        raise _Unchecked(f"needs {count} parameter(s)")


def _check(rule: Rule, value: Any, numeric: bool) -> str | None:
    """Return a failure message, None when the value passes; raise _Unchecked when unknown."""
    name, p = rule.name, rule.params
    if name == "required":
        return "is required" if _empty(value) else None
    if name == "present":
        return "must be present" if value is MISSING else None
    if name == "filled":
        return "must not be empty" if value is not MISSING and _empty(value) else None
    if name == "accepted":
        return None if value in ("yes", "on", "1", "true") or value is True or (type(value) is int and value == 1) \
            else "must be accepted"
    if name == "declined":
        return None if value in ("no", "off", "0", "false") or value is False or (type(value) is int and value == 0) \
            else "must be declined"
    if name == "string":
        return None if isinstance(value, str) else "must be a string"
    if name == "integer":
        return None if _filter_int(value) else "must be an integer"
    if name == "numeric":
        return None if _is_numeric(value) else "must be a number"
    if name == "boolean":
        ok = value is True or value is False or value in ("0", "1") or (type(value) is int and value in (0, 1))
        return None if ok else "must be true or false (0, 1, \"0\" or \"1\")"
    if name == "array" or name == "list":
        return None if isinstance(value, list if name == "list" else (list, dict)) else f"must be an {name}"
    if name in ("in", "notin"):
        if isinstance(value, (list, dict)):
            return "must be a single value"
        s = _php_str(value)
        found = any(_php_loose_str_eq(s, x) for x in p)
        if name == "in":
            return None if found else f"must be one of: {', '.join(p)}"
        return "is not allowed" if found else None
    if name in ("max", "min", "size"):
        _need(p, 1)
        limit, size = _num_param(p[0]), _size(value, numeric)
        if name == "max":
            return None if size <= limit else (f"must not be greater than {p[0]}" if numeric and _is_numeric(value)
                                               else f"must not be longer than {p[0]} characters")
        if name == "min":
            return None if size >= limit else (f"must be at least {p[0]}" if numeric and _is_numeric(value)
                                               else f"must be at least {p[0]} characters")
        return None if size == limit else f"must be of size {p[0]}"
    if name == "between":
        _need(p, 2)
        lo, hi, size = _num_param(p[0]), _num_param(p[1]), _size(value, numeric)
        if lo <= size <= hi:
            return None
        if numeric and _is_numeric(value):
            return f"must be between {p[0]} and {p[1]}"
        return f"must be between {p[0]} and {p[1]} characters"
    if name in ("gt", "gte", "lt", "lte"):
        _need(p, 1)
        if not _is_numeric(p[0]):
            raise _Unchecked("compares with another field")
        if not _is_numeric(value):
            return "must be a number"
        v, lim = _to_number(value), _to_number(p[0])
        ok = {"gt": v > lim, "gte": v >= lim, "lt": v < lim, "lte": v <= lim}[name]
        word = {"gt": "greater than", "gte": "greater than or equal to", "lt": "less than",
                "lte": "less than or equal to"}[name]
        return None if ok else f"must be {word} {p[0]}"
    if name == "multipleof":
        _need(p, 1)
        if not _is_numeric(value):
            return "must be a number"
        d = _num_param(p[0])
        if d == 0:
            return f"must be a multiple of {p[0]}"
        return None if _to_number(value) % d == 0 else f"must be a multiple of {p[0]}"
    if name in ("digits", "digitsbetween", "maxdigits", "mindigits"):
        s = _php_str(value)
        if re.search(r"[^0-9]", s) or isinstance(value, (list, dict)):
            return "must contain only digits"
        ln = len(s.encode("utf-8"))
        if name == "digits":
            _need(p, 1)
            return None if Decimal(ln) == _num_param(p[0]) else f"must be {p[0]} digits"
        if name == "digitsbetween":
            _need(p, 2)
            return None if _num_param(p[0]) <= ln <= _num_param(p[1]) else f"must be between {p[0]} and {p[1]} digits"
        _need(p, 1)
        if name == "maxdigits":
            return None if ln <= _num_param(p[0]) else f"must not have more than {p[0]} digits"
        return None if ln >= _num_param(p[0]) else f"must have at least {p[0]} digits"
    if name == "decimal":
        _need(p, 1)
        if not _is_numeric(value):
            return "must be a number"
        m = re.fullmatch(r"[+-]?\d*\.?(\d*)", _php_str(value).strip(_PHP_WS))
        places = len(m.group(1)) if m else -1
        lo = int(_num_param(p[0]))
        hi = int(_num_param(p[1])) if len(p) > 1 and p[1] != "" else lo
        return None if lo <= places <= hi else f"must have {p[0]}{'-' + p[1] if len(p) > 1 else ''} decimal places"
    if name in ("alpha", "alphanum", "alphadash"):
        ascii_only = bool(p) and p[0] == "ascii"
        if name == "alpha" and not isinstance(value, str):
            return "must only contain letters"
        if name != "alpha" and not (isinstance(value, str) or _is_numeric(value)):
            return "must be a string"
        s = _php_str(value)
        if name == "alpha":
            ok = bool(re.fullmatch(r"[a-zA-Z]+", s)) if ascii_only else _unicode_all(s, ("L", "M"))
            return None if ok else "must only contain letters"
        if name == "alphanum":
            ok = bool(re.fullmatch(r"[a-zA-Z0-9]+", s)) if ascii_only else _unicode_all(s, ("L", "M", "N"))
            return None if ok else "must only contain letters and numbers"
        ok = bool(re.fullmatch(r"[a-zA-Z0-9_-]+", s)) if ascii_only else _unicode_all(s, ("L", "M", "N"), "_-")
        return None if ok else "must only contain letters, numbers, dashes and underscores"
    if name == "ascii":
        return None if isinstance(value, str) and value.isascii() else "must only contain ASCII characters"
    if name in ("lowercase", "uppercase"):
        s = _php_str(value)
        ok = s == (s.lower() if name == "lowercase" else s.upper())
        return None if ok else f"must be {name}"
    if name in ("startswith", "endswith", "doesntstartwith", "doesntendwith"):
        s = _php_str(value)
        needles = [x for x in p if x != ""]
        hit = any(s.startswith(x) if "start" in name else s.endswith(x) for x in needles)
        if name.startswith("doesnt"):
            return f"must not {'start' if 'start' in name else 'end'} with: {', '.join(p)}" if hit else None
        return None if hit else f"must {'start' if 'start' in name else 'end'} with one of: {', '.join(p)}"
    if name in ("ip", "ipv4", "ipv6"):
        try:
            addr = ipaddress.ip_address(_php_str(value))
        except ValueError:
            return f"must be a valid {'IP' if name == 'ip' else name.upper()} address"
        if name == "ipv4" and addr.version != 4 or name == "ipv6" and addr.version != 6:
            return f"must be a valid {name.upper()} address"
        return None
    if name == "url":
        if not isinstance(value, str):
            return "must be a valid URL"
        return None if _is_url(value) else "must be a valid URL"
    if name == "email":
        ok = isinstance(value, str) and re.fullmatch(r"[^\s@]+@[^\s@]+", value)
        return None if ok else "must be a valid email address"
    if name == "json":
        if not isinstance(value, str):
            return "must be a valid JSON string"
        try:
            json.loads(value)
        except ValueError:
            return "must be a valid JSON string"
        return None
    if name == "uuid":
        ok = isinstance(value, str) and re.fullmatch(r"[\da-fA-F]{8}-[\da-fA-F]{4}-[\da-fA-F]{4}-[\da-fA-F]{4}-[\da-fA-F]{12}", value)
        return None if ok else "must be a valid UUID"
    if name == "ulid":
        ok = isinstance(value, str) and re.fullmatch(r"[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}", value)
        return None if ok else "must be a valid ULID"
    if name == "macaddress":
        s = _php_str(value)
        ok = re.fullmatch(r"(?:[0-9A-Fa-f]{2}([-:]))(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}|"
                          r"(?:[0-9A-Fa-f]{4}\.){2}[0-9A-Fa-f]{4}", s)
        return None if ok else "must be a valid MAC address"
    if name == "hexcolor":
        ok = re.fullmatch(r"#(?:[0-9a-fA-F]{3}){1,2}|#(?:[0-9a-fA-F]{4}){1,2}", _php_str(value))
        return None if ok else "must be a valid hexadecimal colour"
    if name in ("regex", "notregex"):
        _need(p, 1)
        try:
            pattern = compile_php_regex(p[0])
        except UnsupportedPattern as e:
            raise _Unchecked(str(e)) from None
        if not (isinstance(value, str) or _is_numeric(value)):
            return "format is invalid"
        s = _php_str(value)
        if len(s) > MAX_REGEX_SUBJECT_CHARS:
            return f"is too long to check against a pattern ({MAX_REGEX_SUBJECT_CHARS} characters at most)"
        hit = _regex_search(pattern, s)
        if name == "regex":
            return None if hit else "format is invalid"
        return "format is invalid" if hit else None
    raise _Unchecked("unknown rule" if name not in OTHER_FIELDS else "not checked by roost")


_URL = re.compile(
    r"[a-zA-Z][a-zA-Z0-9+.\-]*://"  # scheme
    r"(?:[^\s/?#@]+@)?"  # userinfo
    r"(?:\[[0-9a-fA-F:.]+\]|[^\s/?#:\[\]@]+)"  # host
    r"(?::\d{1,5})?"  # port
    r"(?:[/?#]\S*)?"
)


def _is_url(s: str) -> bool:
    if not _URL.fullmatch(s):
        return False
    try:
        parts = urlsplit(s)
        _ = parts.port
    except ValueError:
        return False
    host = parts.hostname or ""
    if host.startswith("[") or ":" in host:
        try:
            ipaddress.IPv6Address(host.strip("[]"))
        except ValueError:
            return False
        return True
    labels = host.split(".")
    return all(lbl and (lbl.isalnum() or re.fullmatch(r"[\w-]+", lbl) and not lbl.startswith("-"))
               for lbl in labels) or host == "localhost"


def rule_problems(rules: Any) -> list[str]:
    """What roost will not check in `rules` (unknown names, bad parameters, patterns), as text.

    Used at egg import to warn; an empty list means every rule is checked.
    """
    try:
        parsed = parse_rules(rules)
    except TypeError as e:
        return [str(e)]
    problems = []
    for r in parsed:
        if r.name in MARKERS:
            continue
        try:
            if r.name in ("regex", "notregex"):
                _need(r.params, 1)
                compile_php_regex(r.params[0])
            else:
                _check(r, "x", False)
                _check(r, "1", True)
        except (_Unchecked, UnsupportedPattern, InvalidOperation, ValueError, OverflowError) as e:
            problems.append(f"`{r.raw}`: {e}")
    return problems


def _php_trim(s: str) -> str:
    """PHP trim(): only these characters, not every Unicode space."""
    return s.strip(" \t\n\r\0\x0b")


def normalize_value(value: Any) -> Any:
    """The panel's request pipeline: trim strings, and an empty string becomes null."""
    if isinstance(value, str):
        value = _php_trim(value)
        return None if value == "" else value
    return value


def validate_value(variable: str, value: Any, rules: Any, *, normalize: bool = True) -> ValidationResult:
    """Check `value` of `variable` against `rules` with Laravel's semantics.

    Args:
        variable: the variable's name (env name) used in failure messages.
        value: str, int, float, bool, None, or `MISSING` when the variable was not given.
        rules: the egg's `rules` (string or list).
        normalize: apply the panel's request pipeline first (trim, `""` → None).

    Never raises for any value or rule; bad `rules` shapes are reported as unchecked.
    """
    result = ValidationResult(variable)
    try:
        parsed = parse_rules(rules)
    except TypeError as e:
        result.unchecked.append(f"{rules!r}: {e}")
        return result
    if normalize and value is not MISSING:
        value = normalize_value(value)
    names = {r.name for r in parsed}
    numeric = bool(names & NUMERIC_RULES)
    nullable = "nullable" in names
    bail = "bail" in names
    if "sometimes" in names and value is MISSING:
        return result
    implicit_failed = False
    for rule in parsed:
        if rule.name in MARKERS:
            continue
        implicit = rule.name in IMPLICIT
        if not implicit:
            if isinstance(value, str) and _php_trim(value) == "" or value is MISSING:
                continue
            if nullable and value is None:
                continue
        try:
            msg = _check(rule, value, numeric)
        except _Unchecked as e:
            result.unchecked.append(f"`{rule.raw}`: {e}")
            continue
        except (InvalidOperation, ValueError, OverflowError) as e:
            result.unchecked.append(f"`{rule.raw}`: {e}")
            continue
        if msg is not None:
            result.failures.append(RuleFailure(variable, rule.raw, msg))
            if implicit:
                implicit_failed = True
            if bail or implicit_failed:
                break
    return result


def validate_values(values: dict[str, Any], rules: dict[str, Any], *, normalize: bool = True) -> list[ValidationResult]:
    """Validate several variables: `rules` maps each variable name to its rules.

    A variable in `rules` that is missing from `values` is validated as `MISSING`.
    """
    return [validate_value(name, values.get(name, MISSING), r, normalize=normalize) for name, r in rules.items()]
