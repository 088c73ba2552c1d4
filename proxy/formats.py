"""Render a response envelope byte-for-byte the way PHP would print it.

The envelope is a Python value in the JSON data model (dict with str keys, list, str, int,
float, bool, None). Legacy PHP clients read our answers with ``json_decode``, ``unserialize``
or ``eval`` of ``var_export`` output, so each format reproduces exactly what PHP 8.2 prints
(``serialize_precision = -1``) for the value ``json_decode`` makes of the envelope's JSON:

* json / jsonu: ``json_encode(json_decode($json))`` - dicts stay objects;
* serialize / var_export: of ``json_decode($json, true)`` - the "PHP array model": ordered
  arrays whose canonical numeric-string keys became ints, ints beyond int64 became floats;
* xml: our own typed encoding that SimpleXML plus a small decoder reads back.

Values PHP cannot hold are normalised the same way everywhere: inf/nan (and ints too big for a
float) become null, lone surrogates become U+FFFD. See docs/formats.md for the full contract.

Pure module: the standard library and proxy/php_values.py (the PHP value model) only; no
Flask, nothing else from ``proxy``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from json.encoder import encode_basestring, encode_basestring_ascii

from proxy.php_values import (
    PHP_INT_MIN,
    Frozen,
    Memo,
    as_json_type,
    as_php_number,
    checked_key,
    php_array_key,
    php_float_repr,
    php_str,
)

__all__ = [
    "CONTENT_TYPES",
    "Frozen",
    "JSONP_CONTENT_TYPE",
    "RESULT_TYPES",
    "is_safe_element_name",
    "is_valid_callback",
    "php_array_key",
    "php_float_repr",
    "php_str",
    "render",
    "render_json",
    "render_jsonp",
    "render_serialize",
    "render_var_export",
    "render_xml",
]

RESULT_TYPES = ("json", "jsonu", "xml", "serialize", "var_export")

CONTENT_TYPES = {
    "json": "application/json; charset=utf-8",
    "jsonu": "application/json; charset=utf-8",
    "xml": "application/xml; charset=utf-8",
    "serialize": "text/plain; charset=utf-8",
    "var_export": "text/plain; charset=utf-8",
}
JSONP_CONTENT_TYPE = "application/javascript; charset=utf-8"

# ---------------------------------------------------------------------------
# json / jsonu / jsonp
# ---------------------------------------------------------------------------


def _json_string_ascii(text: str) -> str:
    text = php_str(text)
    if "\x7f" in text:  # PHP leaves DEL raw where Python's ASCII encoder writes \u007f
        parts = [_json_string_ascii(part)[1:-1] for part in text.split("\x7f")]
        return '"' + "\x7f".join(parts) + '"'
    return encode_basestring_ascii(text).replace("/", "\\/")


def _json_string_unicode(text: str) -> str:
    encoded = encode_basestring(php_str(text)).replace("/", "\\/")
    if "\u2028" in encoded or "\u2029" in encoded:
        encoded = encoded.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return encoded


def _json_number(number: int | float) -> str:
    php_number = as_php_number(number)
    if php_number is None:
        return "null"
    return str(php_number) if type(php_number) is int else php_float_repr(php_number, "e")


_JSON_CONSTANTS = {True: "true", False: "false", None: "null"}


def render_json(value: object, *, unescaped_unicode: bool = False) -> str:
    """What PHP's ``json_encode(json_decode($json))`` prints (JSON_UNESCAPED_UNICODE if asked).

    Dicts print as objects (even empty ones), lists as arrays, ``/`` as ``\\/``, non-ASCII as
    lowercase ``\\uXXXX`` (or raw UTF-8 with ``unescaped_unicode``, except U+2028/U+2029).
    """
    quote = _json_string_unicode if unescaped_unicode else _json_string_ascii
    scalars: dict[type, Callable[[object], str]] = {
        str: quote,
        int: _json_number,
        float: _json_number,
        bool: _JSON_CONSTANTS.__getitem__,
        type(None): _JSON_CONSTANTS.__getitem__,
    }
    keys = Memo(lambda key: quote(checked_key(key)) + ":")

    def encode(item: object) -> str:
        kind = type(item)
        if kind is dict:
            return "{" + ",".join([keys[k] + encode(v) for k, v in item.items()]) + "}"
        if kind is list:
            return "[" + ",".join([encode(v) for v in item]) + "]"
        if kind is Frozen:
            return item.rendering(("json", unescaped_unicode), encode)
        scalar = scalars.get(kind)
        return encode(as_json_type(item)) if scalar is None else scalar(item)

    return encode(value)


_CALLBACK = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)*")
_CALLBACK_MAX_LENGTH = 64
_JS_RESERVED = frozenset(
    # ECMAScript keywords, literals, strict-mode and older (ES1-3) future reserved words.
    """
    abstract arguments await boolean break byte case catch char class const continue
    debugger default delete do double else enum eval export extends false final finally
    float for function goto if implements import in instanceof int interface let long
    native new null package private protected public return short static super switch
    synchronized this throw throws transient true try typeof var void volatile while with
    yield
    """.split()
)


def is_valid_callback(name: str) -> bool:
    """True if ``name`` is a safe JSONP callback: dotted ASCII identifiers, at most 64 chars.

    Every dot-separated segment must match ``[A-Za-z_$][A-Za-z0-9_$]*`` and must not be a
    JavaScript reserved word.
    """
    if not isinstance(name, str) or not 0 < len(name) <= _CALLBACK_MAX_LENGTH:
        return False
    if _CALLBACK.fullmatch(name) is None:
        return False
    return not any(segment in _JS_RESERVED for segment in name.split("."))


def render_jsonp(value: object, callback: str, *, unescaped_unicode: bool = False) -> str:
    """``/**/CALLBACK(JSON);`` - raises ValueError if the callback name is not valid."""
    if not is_valid_callback(callback):
        raise ValueError("invalid JSONP callback name")
    return f"/**/{callback}({render_json(value, unescaped_unicode=unescaped_unicode)});"


# ---------------------------------------------------------------------------
# serialize: of the array json_decode($json, true) makes
# ---------------------------------------------------------------------------


def _serialize_string(text: str) -> str:
    text = php_str(text)
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    return f's:{size}:"{text}";'


def _serialize_key(key: str) -> str:
    php_key = php_array_key(php_str(checked_key(key)))
    return f"i:{php_key};" if type(php_key) is int else _serialize_string(php_key)


def _serialize_number(number: int | float) -> str:
    php_number = as_php_number(number)
    if php_number is None:
        return "N;"
    if type(php_number) is int:
        return f"i:{php_number};"
    return f"d:{php_float_repr(php_number, 'E')};"


_SERIALIZE_SCALARS: dict[type, Callable[[object], str]] = {
    str: _serialize_string,
    int: _serialize_number,
    float: _serialize_number,
    bool: {True: "b:1;", False: "b:0;"}.__getitem__,
    type(None): lambda _: "N;",
}


def render_serialize(value: object) -> str:
    """What PHP's ``serialize(json_decode($json, true))`` prints."""
    keys = Memo(_serialize_key)

    def encode(item: object) -> str:
        kind = type(item)
        if kind is dict:
            body = "".join([keys[k] + encode(v) for k, v in item.items()])
            return f"a:{len(item)}:{{{body}}}"
        if kind is list:
            body = "".join([f"i:{i};{encode(v)}" for i, v in enumerate(item)])
            return f"a:{len(item)}:{{{body}}}"
        if kind is Frozen:
            return item.rendering("serialize", encode)
        scalar = _SERIALIZE_SCALARS.get(kind)
        return encode(as_json_type(item)) if scalar is None else scalar(item)

    return encode(value)


# ---------------------------------------------------------------------------
# var_export: of the array json_decode($json, true) makes
# ---------------------------------------------------------------------------


def _var_export_string(text: str) -> str:
    escaped = php_str(text).replace("\\", "\\\\").replace("'", "\\'")
    if "\0" in escaped:
        escaped = escaped.replace("\0", "' . \"\\0\" . '")
    return f"'{escaped}'"


def _var_export_key(key: str) -> str:
    php_key = php_array_key(php_str(checked_key(key)))
    return f"{php_key} => " if type(php_key) is int else _var_export_string(php_key) + " => "


def _var_export_number(number: int | float) -> str:
    php_number = as_php_number(number)
    if php_number is None:
        return "NULL"
    if type(php_number) is int:
        # PHP prints PHP_INT_MIN this way because the literal would parse as a float.
        return "-9223372036854775807-1" if php_number == PHP_INT_MIN else str(php_number)
    text = php_float_repr(php_number, "E")
    return text if "." in text else text + ".0"


_VAR_EXPORT_SCALARS: dict[type, Callable[[object], str]] = {
    str: _var_export_string,
    int: _var_export_number,
    float: _var_export_number,
    bool: {True: "true", False: "false"}.__getitem__,
    type(None): lambda _: "NULL",
}


def render_var_export(value: object) -> str:
    """What PHP's ``var_export(json_decode($json, true), true)`` prints.

    Layout as php_var_export_ex: elements of an array at level L are indented L+1 spaces and
    their values rendered at level L+2; a nested array starts on a new line, indented L-1.
    """
    keys = Memo(_var_export_key)

    def encode(item: object, level: int) -> str:
        kind = type(item)
        if kind is dict:
            entries = [(keys[k], v) for k, v in item.items()]
        elif kind is list:
            entries = [(f"{i} => ", v) for i, v in enumerate(item)]
        elif kind is Frozen:
            return item.rendering(("var_export", level), lambda plain: encode(plain, level))
        else:
            scalar = _VAR_EXPORT_SCALARS.get(kind)
            return encode(as_json_type(item), level) if scalar is None else scalar(item)
        indent = " " * (level + 1)
        body = "".join([f"{indent}{key}{encode(v, level + 2)},\n" for key, v in entries])
        outdent = " " * (level - 1)
        head = f"\n{outdent}array (\n" if level > 1 else "array (\n"
        return f"{head}{body}{outdent})"

    return encode(value, 1)


# ---------------------------------------------------------------------------
# xml: our typed encoding, read back by SimpleXML + the decoder in docs/formats.md
# ---------------------------------------------------------------------------

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# Code points outside XML 1.0's Char production (surrogates are already gone via php_str).
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_XML_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_XML_ATTRIBUTE_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\t": "&#9;",
        "\n": "&#10;",
        "\r": "&#13;",
    }
)


def is_safe_element_name(key: str) -> bool:
    """A key may name an element only if it is a short ASCII identifier not starting "xml"."""
    return _XML_NAME.fullmatch(key) is not None and key[:3].lower() != "xml"


def _base64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _xml_child_of_object(key: str) -> tuple[str, str]:
    """(element name, attributes) for an object entry: safe keys name it, others go in key=."""
    key = php_str(checked_key(key))
    if is_safe_element_name(key):
        return key, ""
    if _XML_FORBIDDEN.search(key):
        return "item", f' key="{_base64(key)}" key-encoding="base64"'
    return "item", f' key="{key.translate(_XML_ATTRIBUTE_ESCAPES)}"'


def _xml_string(text: str) -> tuple[str, str]:
    """(attributes, content) of a string: its escaped text; when XML forbids a character in
    it, the text without those characters, and the exact value in a base64 attribute."""
    text = php_str(text)
    if _XML_FORBIDDEN.search(text):
        # (string) of the element stays readable; the documented decoder reads the attribute.
        readable = _XML_FORBIDDEN.sub("", text)
        return f' base64="{_base64(text)}"', readable.translate(_XML_TEXT_ESCAPES)
    return "", text.translate(_XML_TEXT_ESCAPES)


def _xml_number(number: int | float) -> tuple[str, str]:
    php_number = as_php_number(number)
    if php_number is None:
        return ' type="null"', ""
    if type(php_number) is int:
        return ' type="int"', str(php_number)
    return ' type="float"', php_float_repr(php_number, "E")


_XML_SCALARS: dict[type, Callable[[object], tuple[str, str]]] = {
    str: _xml_string,
    int: _xml_number,
    float: _xml_number,
    bool: {True: (' type="bool"', "true"), False: (' type="bool"', "false")}.__getitem__,
    type(None): lambda _: (' type="null"', ""),
}


def render_xml(value: object) -> str:
    """UTF-8 XML document with a ``<root>`` element; see docs/formats.md for the encoding."""
    children = Memo(_xml_child_of_object)

    def element(tag: str, attributes: str, item: object) -> str:
        kind = type(item)
        if kind is dict:
            attributes += ' type="object"'
            content = "".join([element(*children[k], v) for k, v in item.items()])
        elif kind is list:
            attributes += ' type="list"'
            content = "".join([element("item", "", v) for v in item])
        elif kind is Frozen:
            return item.rendering(
                ("xml", tag, attributes), lambda plain: element(tag, attributes, plain)
            )
        elif kind in _XML_SCALARS:
            scalar_attributes, content = _XML_SCALARS[kind](item)
            attributes += scalar_attributes
        else:
            return element(tag, attributes, as_json_type(item))
        if not content:
            return f"<{tag}{attributes}/>"
        return f"<{tag}{attributes}>{content}</{tag}>"

    return f"{XML_DECLARATION}\n{element('root', '', value)}"


# ---------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------

_RENDERERS: dict[str, Callable[[object], str]] = {
    "json": render_json,
    "jsonu": lambda value: render_json(value, unescaped_unicode=True),
    "xml": render_xml,
    "serialize": render_serialize,
    "var_export": render_var_export,
}


def render(value: object, result_type: str, callback: str | None = None) -> tuple[bytes, str]:
    """Render ``value`` as ``result_type``; return (UTF-8 body, Content-Type header value).

    ``callback`` wraps json/jsonu as JSONP and is ignored (not even validated) for the other
    formats. Raises ValueError for an unknown result_type or an invalid callback.
    """
    if result_type not in _RENDERERS:
        raise ValueError(f"unknown result_type {result_type!r}")
    if callback is not None and result_type in ("json", "jsonu"):
        body = render_jsonp(value, callback, unescaped_unicode=result_type == "jsonu")
        return body.encode("utf-8"), JSONP_CONTENT_TYPE
    return _RENDERERS[result_type](value).encode("utf-8"), CONTENT_TYPES[result_type]
