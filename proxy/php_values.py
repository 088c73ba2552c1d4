"""The PHP value model every format renders: what PHP's ``json_decode`` makes of a value in
the JSON data model (strings as PHP holds them, int64 ints, array keys, floats printed with
``serialize_precision = -1``), and the two caches of a rendering (Frozen answers, Memo keys).

Pure module: standard library only, no Flask, nothing else from ``proxy``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

PHP_INT_MIN = -(2**63)
PHP_INT_MAX = 2**63 - 1


# ---------------------------------------------------------------------------
# PHP scalars: what json_decode makes of a JSON scalar
# ---------------------------------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")


def php_str(text: str) -> str:
    """Return ``text`` as PHP can hold it: surrogate pairs joined, lone surrogates -> U+FFFD.

    A str from ``json.loads`` can contain a lone surrogate (JSON ``"\\ud800"``); PHP strings are
    UTF-8 bytes and cannot, so such code points become U+FFFD REPLACEMENT CHARACTER. A high and
    low surrogate side by side become the one character that JSON ``"\\ud83d\\ude00"`` means.
    """
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def as_php_number(number: int | float) -> int | float | None:
    """The number json_decode makes: int64 ints stay ints, bigger ints become floats.

    Non-finite floats (and ints too big for a float) have no JSON form: they become None.
    """
    if type(number) is int:
        if PHP_INT_MIN <= number <= PHP_INT_MAX:
            return number
        try:
            number = float(number)
        except OverflowError:
            return None
    return number if math.isfinite(number) else None


def as_json_type(value: object) -> object:
    """Subclasses (OrderedDict, tuple, IntEnum, str subclasses...) as their JSON-model base type.

    Raises TypeError for anything outside the JSON data model.
    """
    for base, convert in _EXACT_TYPES:
        if isinstance(value, base):
            return convert(value)
    raise TypeError(f"value of type {type(value).__name__} is not in the JSON data model")


_EXACT_TYPES = ((dict, dict), (list | tuple, list), (str, str), (int, int), (float, float))


def checked_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"envelope keys must be str, not {type(key).__name__}")
    return key


_NUMERIC_KEY = re.compile(r"0|-?[1-9][0-9]{0,18}")


def php_array_key(key: str) -> int | str:
    """PHP's array-key rule: canonical decimal strings within int64 ("123", "-5") become ints.

    "05", "-0", "1.5", " 1", "+1" and out-of-range numbers stay strings.
    """
    if _NUMERIC_KEY.fullmatch(key):
        number = int(key)
        if PHP_INT_MIN <= number <= PHP_INT_MAX:
            return number
    return key


# PHP with serialize_precision = -1 prints the shortest round-trip digits (zend_gcvt, mode 0)
# and switches to exponent notation when the decimal point would sit past 17 digits or more
# than 3 zeros after it. Python's repr uses the same digits with a narrower plain range.
_PHP_GCVT_PRECISION = 17


def php_float_repr(number: float, exponent_char: str = "E") -> str:
    """Print a finite float like PHP does with serialize_precision = -1.

    ``exponent_char`` is ``"e"`` for json_encode and ``"E"`` for serialize/var_export.
    Examples: 1.0 -> "1", -0.0 -> "-0", 1e-7 -> "1.0E-7", 1e16 -> "10000000000000000".
    (var_export adds ".0" when there is no decimal point; that is the caller's job.)
    """
    text = repr(number)
    if "e" not in text and "n" not in text:  # plain notation, and not inf/nan
        return text[:-2] if text.endswith(".0") else text
    if not math.isfinite(number):
        raise ValueError(f"PHP prints no finite form of {number!r}")
    digits, decpt = _shortest_digits(abs(number))
    sign = "-" if number < 0 else ""
    if decpt < -3 or decpt > _PHP_GCVT_PRECISION:
        exponent = decpt - 1
        mantissa = digits[0] + "." + (digits[1:] or "0")
        return f"{sign}{mantissa}{exponent_char}{'-' if exponent < 0 else '+'}{abs(exponent)}"
    if decpt <= 0:
        return f"{sign}0.{'0' * -decpt}{digits}"
    if len(digits) <= decpt:
        return sign + digits + "0" * (decpt - len(digits))
    return f"{sign}{digits[:decpt]}.{digits[decpt:]}"


def _shortest_digits(magnitude: float) -> tuple[str, int]:
    """Shortest round-trip digits of a finite positive float and the decimal point position.

    The value is 0.DIGITS * 10**decpt, as dtoa reports it.
    """
    mantissa, _, exponent = repr(magnitude).partition("e")
    integer, _, fraction = mantissa.partition(".")
    all_digits = integer + fraction
    significant = all_digits.lstrip("0")
    decpt = len(integer) + int(exponent or 0) - (len(all_digits) - len(significant))
    return significant.rstrip("0"), decpt


class Frozen(dict):
    """A JSON object that never changes (an answer kept by the cache): each format renders it
    once and keeps the text, so serving it again costs no rendering. Its own keys cannot be
    set or removed; what it holds must not be changed either, or the kept texts would lie."""

    __slots__ = ("_renderings",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._renderings: dict = {}

    def rendering(self, how: object, render: Callable[[dict], str]) -> str:
        """The text `render(self as a plain dict)` made, once per `how`."""
        text = self._renderings.get(how)
        if text is None:
            text = self._renderings[how] = render(dict(self))
        return text

    def _frozen(self, *_args, **_kwargs):
        raise TypeError("a Frozen object is never changed")

    __setitem__ = __delitem__ = __ior__ = _frozen  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _frozen  # type: ignore[assignment]

    def __reduce__(self):  # copies and pickles are plain dicts: they are not kept texts
        return (dict, (dict(self),))


class Memo(dict):
    """Per-render cache: envelope keys repeat row after row, so each is escaped only once."""

    def __init__(self, compute: Callable[[str], object]):
        super().__init__()
        self._compute = compute

    def __missing__(self, key):
        value = self[key] = self._compute(key)
        return value
