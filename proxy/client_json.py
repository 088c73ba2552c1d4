"""JSON as a client sends it (`_o_args`, a JSON body): read with json.loads, except that the
numbers no JSON encoder sends on (NaN, Infinity, 1e999, an integer too long to read) and
texts holding a lone UTF-16 surrogate are refused with a 4003 that names where they are.
Pure: standard library and proxy.errors."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from proxy.errors import PARAM_ERROR, GatewayError


def load_checked(text: str, field: str, max_bytes: int):
    """`text` (a client's JSON, sent as `field`) read, if it is at most `max_bytes` of UTF-8
    and every value in it can be sent on: else GatewayError 4003 naming `field`. Malformed
    JSON raises ValueError and JSON nested too deep RecursionError, for the caller to word."""
    refuse_unsendable(text, field)  # first: a lone surrogate cannot be encoded to measure it
    if len(text.encode("utf-8")) > max_bytes:
        raise GatewayError(PARAM_ERROR, f"{field} is larger than {max_bytes} bytes")
    value = load_client_json(text)
    refuse_unsendable(value, field)
    return value


# Python refuses to read longer integers (sys.get_int_max_str_digits); no upstream takes them.
MAX_INTEGER_DIGITS = 4300


@dataclass(frozen=True)
class _UnsendableNumber:
    """A number JSON text may hold but no JSON encoder sends on (NaN, Infinity, 1e999, an
    integer too long to read): kept in place by load_client_json so the walk can name it."""

    problem: str


def load_client_json(text: str):
    """json.loads for what a client sends; unsendable numbers become _UnsendableNumber for
    refuse_unsendable to name. Malformed JSON raises ValueError as json.loads does."""

    def finite_float(literal: str):
        number = float(literal)
        if math.isfinite(number):
            return number
        return _UnsendableNumber(
            f"the number {literal[:20]} is too large for a 64-bit float; send a smaller one"
        )

    def bounded_int(literal: str):
        digits = len(literal.lstrip("-"))
        if digits <= MAX_INTEGER_DIGITS:
            return int(literal)
        return _UnsendableNumber(
            f"an integer of {digits} digits is longer than the {MAX_INTEGER_DIGITS} accepted; "
            "send it as a string"
        )

    return json.loads(
        text,
        parse_constant=lambda name: _UnsendableNumber(
            f"{name} is not a JSON number; send a finite number or null"
        ),
        parse_float=finite_float,
        parse_int=bounded_int,
    )


def refuse_unsendable(value, field: str) -> None:
    """GatewayError(4003) naming the first value in `value` that cannot be sent on: a text
    (or object key) holding a lone UTF-16 surrogate such as \\ud800, which is not Unicode and
    which no UTF-8 encoder (the database, the upstream's JSON) can write; or an unsendable
    number (NaN, Infinity, 1e999, a 4,301-digit integer)."""
    stack = [(value, field)]
    while stack:
        node, path = stack.pop()
        where = path or "a field"
        if isinstance(node, str) and not _is_unicode_text(node):
            raise GatewayError(PARAM_ERROR, _surrogate_reason(where))
        if isinstance(node, _UnsendableNumber):
            raise GatewayError(PARAM_ERROR, f"{where}: {node.problem}")
        if isinstance(node, dict):
            for name, child in node.items():
                if isinstance(name, str) and not _is_unicode_text(name):
                    raise GatewayError(PARAM_ERROR, _surrogate_reason(f"a field name in {where}"))
                stack.append((child, f"{path}.{str(name)[:64]}" if path else str(name)[:64]))
        elif isinstance(node, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(node))


def _surrogate_reason(where: str) -> str:
    return (
        f"{where} holds a lone UTF-16 surrogate (such as \\ud800), which is not text; "
        "send valid Unicode (a surrogate pair, or UTF-8)"
    )


def _is_unicode_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
