"""Reading and checking the package's documents: scenario, generator and plan files, experiment and tuning configs.

One reader (:func:`read_document`: JSON or TOML by suffix, at most :data:`MAX_DEPTH` levels of nesting, no
``NaN``/``Infinity`` and no repeated key in JSON) and strict field checks that raise the caller's error class
(``ScenarioError``, ``PlanError``, ``ConfigError``) naming the field, the value and the rule: an unknown key is
refused with the allowed ones and a "did you mean" suggestion, a boolean is not a number, a count is an integer
(never a fraction), numbers are finite, arrays have the declared length, and a document ``version`` the package
does not know is refused. Every check runs before any work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
import numbers
import reprlib
import sys
from pathlib import Path

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_DEPTH = 64  # levels of nesting a document may have (the package's own documents use at most 5)
MAX_BYTES = 1 << 30  # size of a document file (a scenario of 10,000 devices and 100 edge servers is ~30 MB)
_SHORT = reprlib.Repr()  # a value quoted in a message: a few levels and items of it, never a recursion
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 3, 6, 6, 4, 60, 60


def short(value) -> str:
    """A short ``repr`` of ``value`` (messages stay one readable line, however large or deep the value)."""
    return _SHORT.repr(value)


def hint(name, allowed) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``allowed`` to ``name``, else an empty string."""
    close = difflib.get_close_matches(str(name), [str(a) for a in allowed], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def field(where: str, key) -> str:
    """The path of ``key`` inside ``where`` (``devices[id=3]`` + ``pmax_w`` -> ``devices[id=3].pmax_w``)."""
    return f"{where}.{key}" if where else str(key)


def fail(error: type[Exception], where: str, value, rule: str):
    """Raise ``error("<where> = <value>: <rule>")``."""
    raise error(f"{where} = {short(value)}: {rule}")


# ----------------------------------------------------------------------------------------------- reading
def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number (write a finite number, or null where allowed)")


def _no_repeats(pairs: list) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key {key!r} appears twice in one object")
    return out


def depth(obj) -> int:
    """Levels of nesting of a parsed document (a scalar is 0, ``[1]`` is 1), without recursion."""
    deepest, stack = 0, [(obj, 0)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        d += 1
        deepest = max(deepest, d)
        if d > MAX_DEPTH:
            return d
        stack.extend((child, d) for child in node if isinstance(child, (dict, list)))
    return deepest


def check_depth(value, where: str, error: type[Exception]) -> None:
    """Refuse a (free-form) value nested deeper than :data:`MAX_DEPTH`."""
    if depth(value) > MAX_DEPTH:
        raise error(f"{where}: nested deeper than {MAX_DEPTH} levels, the limit of a document")


def parse_text(text: str, toml: bool, label: str, error: type[Exception], nesting: bool = True) -> dict:
    """Parse a JSON (or TOML) text into a dict; ``label`` names the input in messages (``scenario = 'x.json'``).
    ``nesting=False`` leaves the nesting limit to the caller (a reader that checks every typed field itself and
    only the free-form ones with :func:`check_depth`: a walk of a large document costs seconds)."""
    try:
        if toml:
            data = tomllib.loads(text)
        else:
            data = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_repeats)
    except RecursionError:
        raise error(f"{label}: nested deeper than {MAX_DEPTH} levels, the limit of a document") from None
    except ValueError as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        kind = "TOML" if toml else "JSON"
        raise error(f"{label}: not valid {kind} (unreadable: {str(exc).splitlines()[0]})") from None
    if nesting:
        check_depth(data, label, error)
    if not isinstance(data, dict):
        raise error(f"{label}: the document is a {type(data).__name__}; it must be an object (a table of named "
                    "fields)")
    return data


def read_document(path, what: str, error: type[Exception], nesting: bool = True) -> dict:
    """Read the JSON (or, for a ``.toml`` suffix in any case, TOML) document at ``path`` as a dict; ``what`` names it in
    messages (``scenario``, ``plan``, ``config``). Any unreadable file raises ``error``. ``nesting``: see
    :func:`parse_text`."""
    path = Path(path)
    label = f"{what} = {str(path)!r}"
    try:
        if path.exists() and not path.is_dir() and not path.is_file():
            raise error(f"{label}: not a regular file (a device, pipe or socket)")
        if path.is_file() and path.stat().st_size > MAX_BYTES:
            raise error(f"{label}: {path.stat().st_size:,} bytes; a document may have at most {MAX_BYTES:,}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} = {str(path)!r}: no such file") from None
    except IsADirectoryError:
        raise error(f"{what} = {str(path)!r}: is a folder, not a file") from None
    except UnicodeDecodeError as exc:
        raise error(f"{label}: not UTF-8 text (unreadable at byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{what} = {str(path)!r}: cannot be read ({exc.strerror or exc})") from None
    toml = path.suffix.lower() == ".toml"
    hint = " (read as JSON: its name does not end in .toml)" if "config" in what and not toml else ""  # configs: TOML
    return parse_text(text, toml, label + hint, error, nesting)


# ----------------------------------------------------------------------------------------------- fields
def check_keys(table, where: str, allowed, error: type[Exception], required=()) -> dict:
    """``table`` as a dict whose keys are all in ``allowed`` and include ``required``."""
    table = as_table(table, where, error)
    for key in table:
        if key not in allowed:
            fail(error, field(where, key), table[key], f"unknown key{hint(key, allowed)}; allowed: {sorted(allowed)}")
    for key in required:
        if key not in table:
            raise error(f"{field(where, key)} = <missing>: required")
    return table


def check_version(value, where: str, known: tuple[int, ...], error: type[Exception]) -> int:
    """A document version the package knows (``known``)."""
    if as_number(value, where, error, integer=True) not in known:
        fail(error, where, value, f"unknown version; this package reads version {', '.join(map(str, known))}")
    return int(value)


def as_table(value, where: str, error: type[Exception]) -> dict:
    if not isinstance(value, dict):
        fail(error, where or "document", value, "must be a table (an object of named fields)")
    return value


def as_number(value, where: str, error: type[Exception], *, integer: bool = False, none: bool = False,
              low: float | None = None, high: float | None = None):
    """A finite int or float (an int when ``integer``), within ``[low, high]`` when given; None when ``none``."""
    kind = type(value)
    if low is None and high is None and (kind is float and not integer and math.isfinite(value)
                                         or kind is int and -2 ** 63 <= value < 2 ** 63):
        return value  # the common case, without the checks below
    if value is None and none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        kind = "a boolean" if isinstance(value, (bool, np.bool_)) else type(value).__name__
        fail(error, where, value, f"must be {'an integer' if integer else 'a number'}, not {kind}")
    if integer and not isinstance(value, numbers.Integral):
        fail(error, where, value, "must be an integer (a count is never fractional)")
    if integer and not -2 ** 63 <= value < 2 ** 63:
        fail(error, where, value, "must be an integer of at most 64 bits")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        finite = False
    if not finite:
        fail(error, where, value, "must be a finite number (within +-1.8e308)")
    if (low is not None and value < low) or (high is not None and value > high):
        fail(error, where, value, f"must be in [{low:g}, {high:g}]" if low is not None and high is not None
             else f"must be >= {low:g}" if low is not None else f"must be <= {high:g}")
    return value


def as_str(value, where: str, error: type[Exception], *, none: bool = False, choices=None):
    if value is None and none:
        return None
    if not isinstance(value, str):
        fail(error, where, value, "must be a string")
    if choices is not None and value not in choices:
        fail(error, where, value, f"must be one of {list(choices)}{hint(value, choices)}")
    return value


def as_bool(value, where: str, error: type[Exception]) -> bool:
    if not isinstance(value, bool):
        fail(error, where, value, "must be true or false")
    return value


def as_list(value, where: str, error: type[Exception], length: int | None = None) -> list:
    if not isinstance(value, list):
        fail(error, where, value, "must be a list" + (f" of {length}" if length is not None else ""))
    if length is not None and len(value) != length:
        fail(error, where, value, f"must be a list of {length} items, not {len(value)}")
    return value


def as_numbers(value, where: str, error: type[Exception], length: int | None = None, integer: bool = False) -> list:
    """A list of finite numbers (integers when ``integer``) of ``length`` items when given."""
    for i, v in enumerate(as_list(value, where, error, length)):
        as_number(v, f"{where}[{i}]", error, integer=integer)
    return value


def as_column(values: list, where, error: type[Exception], integer: bool = False) -> list:
    """A list of finite numbers (integers when ``integer``) checked in bulk; ``where(i)`` names item ``i``, the first
    bad one is refused as :func:`as_number` would."""
    kinds = (int,) if integer else (int, float)
    if all(type(v) in kinds for v in values):  # type(): a boolean is not an int here
        try:
            if np.isfinite(np.asarray(values, dtype=np.int64 if integer else float)).all():
                return values
        except OverflowError:
            pass
    for i, v in enumerate(values):
        as_number(v, where(i), error, integer=integer)
        if not integer and isinstance(v, int) and not -1.8e308 < v < 1.8e308:
            fail(error, where(i), v, "must be a finite number (within +-1.8e308)")
    return values


def as_strings(value, where: str, error: type[Exception], unique: bool = False) -> list:
    for i, v in enumerate(as_list(value, where, error)):
        as_str(v, f"{where}[{i}]", error)
    if unique and len(set(value)) != len(value):
        fail(error, where, value, "names must be unique")
    return value


def first_repeat(items):
    """The first item of ``items`` that an earlier one equals (the one a uniqueness rule names), else None. Linear
    in the number of items (a set) for hashable ones, such as 100,000 device ids; an unhashable item (a list in a
    config) is compared with the earlier unhashable ones."""
    seen: set = set()
    unhashable: list = []
    for item in items:
        try:
            if item in seen:
                return item
            seen.add(item)
        except TypeError:
            if item in unhashable:
                return item
            unhashable.append(item)
    return None


def id_key(key: str, where: str, error: type[Exception]) -> int:
    """An integer id written as an object key (JSON and TOML keys are strings): ``"12"`` -> 12."""
    try:
        number = int(key)
    except ValueError:
        number = None
    if number is None or str(number) != key:
        fail(error, where, key, "must be an integer id (written as a key, e.g. \"12\")")
    return number


# ----------------------------------------------------------------------------------------------- arrays
_KINDS = {"f": "numbers", "i": "integers", "u": "integers", "b": "booleans"}


def frozen(a, dtype, name: str, error: type[Exception]) -> np.ndarray:
    """A read-only copy of ``a`` as ``dtype`` (float, np.int64, np.int8 or bool); raises ``error`` naming ``name``
    where the conversion would change a value: a ragged array, text, a boolean as a number, a fraction or a
    non-finite or huge number as an integer, an integer other than 0/1 as a boolean."""
    try:
        src = np.asarray(a)
    except ValueError:
        raise error(f"{name} = {short(a)}: must be a rectangular array (rows of one length)") from None
    kind, want = src.dtype.kind, np.dtype(dtype).kind
    if src.size and kind not in "fiub":
        raise error(f"{name} = {short(src.tolist())}: must be {_KINDS[want]}")
    if src.size and kind == "b" and want != "b":
        raise error(f"{name} = {short(src.tolist())}: must be {_KINDS[want]}, not booleans")
    if src.size and want in "iu" and kind == "f":
        bad = ~np.isfinite(src) | (np.abs(src) > 2.0 ** 62) | (src != np.round(src))
        if bad.any():
            raise error(f"{name} = {short(src[bad].tolist()[:3])}: must be integers")
    if src.size and want == "b" and kind != "b" and not np.isin(src, (0, 1)).all():
        raise error(f"{name} = {short(src.tolist())}: must be booleans (0 or 1)")
    if src.size and want in "iu" and kind in "iu":
        info = np.iinfo(dtype)
        if src.min() < info.min or src.max() > info.max:
            raise error(f"{name} = {short(src.tolist())}: must be integers in [{info.min}, {info.max}]")
    arr = np.array(src, dtype=dtype, copy=True)
    arr.flags.writeable = False
    return arr


# ----------------------------------------------------------------------------------------------- keywords
def _annotation_check(annotation: str):
    """The check of a keyword whose annotation is ``annotation`` (a string under postponed evaluation)."""
    optional = annotation.endswith(" | None")
    base = annotation.removesuffix(" | None")
    checks = {"int": lambda v, w, e: as_number(v, w, e, integer=True), "float": as_number, "str": as_str,
              "bool": as_bool, "tuple[str, ...]": as_strings}
    check = checks.get(base)
    if check is None:
        return None
    return (lambda v, w, e: None if v is None else check(v, w, e)) if optional else check


def keyword_types(target) -> tuple[dict, tuple[str, ...]]:
    """``({name: check}, required)`` for the keyword parameters of a function, or the fields of a dataclass, whose
    annotation is a plain type (int, float, str, bool, tuple[str, ...], or one of them | None); ``required`` are
    those without a default."""
    if dataclasses.is_dataclass(target):
        items = [(f.name, f.type, f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
                 for f in dataclasses.fields(target)]
    else:
        items = [(p.name, p.annotation, p.default is p.empty) for p in inspect.signature(target).parameters.values()]
    checks, required = {}, []
    for name, annotation, needed in items:
        check = _annotation_check(annotation) if isinstance(annotation, str) else None
        if check is not None:
            checks[name] = check
            if needed:
                required.append(name)
    return checks, tuple(required)


def check_keywords(target, values, where: str, error: type[Exception], skip=()) -> dict:
    """``values`` checked against the keyword parameters (or dataclass fields) of ``target``: no unknown key, every
    required one present, each value of its annotated type; ``skip`` names parameters a document may not set."""
    checks, required = keyword_types(target)
    checks = {k: v for k, v in checks.items() if k not in skip}
    check_keys(values, where, checks, error, required=[r for r in required if r not in skip])
    for key, value in values.items():
        checks[key](value, field(where, key), error)
    return values
