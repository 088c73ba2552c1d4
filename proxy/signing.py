"""Signed requests, onebound style: `sign` + `dateline` instead of `secret` (docs/signing.md).

sign = upper-case hex MD5 of the UTF-8 bytes of
    secret + (every parameter except `sign` and `secret`, sorted by name, each written as
              name immediately followed by value) + secret

Names sort by the bytes of their UTF-8 form (PHP `ksort($p, SORT_STRING)`). A string value is
written as sent; any other value (only a JSON body has them: numbers, booleans, objects such as
an `_o_args` object) as its compact JSON text, `json.dumps(v, ensure_ascii=False,
separators=(",", ":"))`.

Pure: standard library and proxy.errors only; no Flask, no database.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping

from proxy.errors import AUTH_FAILED, GatewayError

SIGN_EXCLUDED_PARAMS = frozenset({"sign", "secret"})

# Wider than any real unix time in seconds; keeps int() and the error text small.
_MAX_DATELINE_DIGITS = 18
_DIGITS = re.compile(r"[0-9]+")


def _value_text(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def signing_string(params: Mapping[str, object]) -> str:
    """The signed text between the two copies of the secret: sorted name+value pairs, joined.

    Raises ValueError (UnicodeEncodeError) when a name holds a lone surrogate, which has no
    UTF-8 form and so no place in the byte order.
    """
    names = sorted(
        (name for name in params if name not in SIGN_EXCLUDED_PARAMS),
        key=lambda name: name.encode("utf-8"),
    )
    return "".join(name + _value_text(params[name]) for name in names)


def compute_sign(secret: str, params: Mapping[str, object]) -> str:
    """The expected `sign`: 32 upper-case hex digits.

    Raises ValueError (UnicodeEncodeError) when a name or value holds a lone surrogate (possible
    from a JSON `"\\ud800"`): such text has no UTF-8 bytes to hash.
    """
    text = secret + signing_string(params) + secret
    return hashlib.md5(text.encode("utf-8")).hexdigest().upper()


def sign_matches(secret: str, params: Mapping[str, object], sign: str) -> bool:
    """Whether the client's `sign` (either case) is the one for these params; constant time."""
    if not isinstance(sign, str) or not sign.isascii():
        return False
    try:
        expected = compute_sign(secret, params)
    except ValueError:  # a lone surrogate: no client can have signed these bytes
        return False
    return hmac.compare_digest(expected, sign.upper())


def parse_dateline(raw: object, *, now: float, window_seconds: int) -> int:
    """`dateline` as unix seconds, or GatewayError 4005 saying what to fix.

    Accepts a string of ASCII digits or (from a JSON body) an int, not a bool; the value must be
    within `window_seconds` of `now` either way (exactly `window_seconds` off is accepted).
    """
    if raw is None or raw == "":
        raise GatewayError(
            AUTH_FAILED,
            "a signed request needs `dateline` (unix time in seconds, e.g. 1700000000) "
            "next to `sign`; `dateline` is one of the signed parameters",
        )
    if isinstance(raw, str) and _DIGITS.fullmatch(raw) and len(raw) <= _MAX_DATELINE_DIGITS:
        dateline = int(raw)
    elif type(raw) is int and abs(raw) < 10**_MAX_DATELINE_DIGITS:
        dateline = raw
    else:
        raise GatewayError(
            AUTH_FAILED,
            "`dateline` must be unix time in whole seconds, digits only (e.g. 1700000000)",
        )
    offset = now - dateline
    if abs(offset) <= window_seconds:
        return dateline
    if abs(now - dateline / 1000) <= window_seconds:
        raise GatewayError(
            AUTH_FAILED,
            "`dateline` looks like milliseconds; send unix time in whole seconds "
            "(e.g. PHP time(), Python int(time.time())) and sign again",
        )
    direction = "behind" if offset > 0 else "ahead of"
    raise GatewayError(
        AUTH_FAILED,
        f"dateline is {math.ceil(abs(offset))} s {direction} the server's clock; signed requests "
        f"must be within ±{window_seconds} s of it: sign again with the current time "
        "(and check the client's clock)",
    )
