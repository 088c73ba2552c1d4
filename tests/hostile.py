"""What every answer to hostile input must be, for the hostile-input suite
(tests/test_hostile_schemathesis.py, tests/test_hostile_hypothesis.py): no HTTP 5xx, no
4000/5000 caused by client input, and on /api the envelope in whatever format it was rendered,
with the id of its usage row in `last_id`. A failure names the request and the answer."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree

# Codes that mean "the gateway broke", never "the client sent something wrong".
SERVER_FAULT_CODES = ("4000", "5000")
# How much of a request or an answer a failure message shows.
SHOWN_CHARACTERS = 1200

_JSONP = re.compile(r"^/\*\*/[A-Za-z_$][\w$.]*\((?P<json>.*)\);$", re.DOTALL)
_VAR_EXPORT_LAST_ID = re.compile(r"\n  'last_id' => '(?P<id>[^'\\]*)',\n\)\Z")
_VAR_EXPORT_CODE = re.compile(r"^  'error_code' => '(?P<code>\d{4})',$", re.MULTILINE)


def shown(value, limit: int = SHOWN_CHARACTERS) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def describe(sent, response) -> str:
    """The request and the answer, for a failure message."""
    body = response.get_data()
    return (
        f"\n  sent: {shown(sent)}"
        f"\n  got:  HTTP {response.status_code} {response.content_type!r}"
        f" X-Error-Code={response.headers.get('X-Error-Code')!r}"
        f"\n  body: {shown(body)}"
    )


def api_envelope(response) -> dict:
    """The envelope of an /api answer, read back from the format it was rendered in (by its
    Content-Type): json, JSONP, xml, serialize, var_export, or the END event of a stream.
    Only `error_code` and `last_id` are guaranteed in the result for the PHP text formats."""
    text = response.get_data(as_text=True)
    mimetype = response.mimetype
    if mimetype == "application/json":
        return json.loads(text)
    if mimetype == "application/javascript":
        match = _JSONP.match(text)
        assert match, "a JSONP answer is /**/name(json);"
        return json.loads(match["json"])
    if mimetype == "application/xml":
        root = ElementTree.fromstring(response.get_data())
        return {child.tag: child.text or "" for child in root}
    if mimetype == "text/event-stream":
        events = [
            json.loads(line[len("data: ") :])
            for line in text.split("\n\n")
            if line.startswith("data: ")
        ]
        assert events and events[-1].get("status") == "END", "a stream ends with its END event"
        return events[-1]
    if mimetype == "text/plain" and text.startswith("a:"):
        value = unserialize(response.get_data())
        assert isinstance(value, dict), "serialize renders the envelope as a PHP array"
        return value
    if mimetype == "text/plain" and text.startswith("array ("):
        last_id = _VAR_EXPORT_LAST_ID.search(text)
        code = _VAR_EXPORT_CODE.search(text)
        assert last_id and code, "var_export has top-level error_code and last_id lines"
        return {"error_code": code["code"], "last_id": last_id["id"]}
    raise AssertionError(f"an /api answer in no known format: {mimetype!r}")


def assert_api_answer(sent, response, status: int = 200) -> dict:
    """An /api answer is HTTP 200 (405 for a wrong verb) with an envelope: a code the client
    caused, the same code in X-Error-Code, and a non-empty `last_id`. Returns the envelope."""
    where = describe(sent, response)
    assert response.status_code == status, f"/api answered HTTP {response.status_code}{where}"
    try:
        envelope = api_envelope(response)
    except Exception as exc:  # the message says which request broke the format
        raise AssertionError(f"the answer is not an envelope ({exc!r}){where}") from None
    code = envelope.get("error_code")
    assert code not in SERVER_FAULT_CODES, f"client input caused error_code {code}{where}"
    if response.mimetype != "text/event-stream":  # a stream's code is in its END event only
        assert code == response.headers.get("X-Error-Code"), f"X-Error-Code differs{where}"
    assert str(envelope.get("last_id") or ""), f"no last_id in the envelope{where}"
    return envelope


def assert_v1_answer(sent, response) -> None:
    """A /v1 answer is never 5xx nor 4000/5000 for client input, and an error is an OpenAI
    error object carrying the gateway code."""
    where = describe(sent, response)
    assert response.status_code < 500, f"/v1 answered HTTP {response.status_code}{where}"
    code = response.headers.get("X-Error-Code")
    assert code not in SERVER_FAULT_CODES, f"client input caused error_code {code}{where}"
    if response.status_code >= 400:
        try:
            error = json.loads(response.get_data(as_text=True))["error"]
        except Exception as exc:
            raise AssertionError(f"a /v1 error that is no error object ({exc!r}){where}") from None
        assert error.get("code") not in SERVER_FAULT_CODES, f"error.code is a fault{where}"


def unserialize(data: bytes):
    """PHP's unserialize() for what serialize() prints of json_decode($json, true): arrays,
    strings (lengths in bytes), ints, floats, booleans, null. Raises ValueError on anything
    malformed, so a wrong string length is caught."""
    value, end = _unserialize_at(data, 0)
    if end != len(data):
        raise ValueError(f"trailing bytes at {end}")
    return value


def _unserialize_at(data: bytes, at: int):
    kind = data[at : at + 2]
    if kind == b"N;":
        return None, at + 2
    if kind in (b"i:", b"d:", b"b:"):
        end = data.index(b";", at)
        text = data[at + 2 : end].decode("ascii")
        if kind == b"i:":
            return int(text), end + 1
        if kind == b"b:":
            return text == "1", end + 1
        return float(text.replace("INF", "inf").replace("NAN", "nan")), end + 1
    if kind == b"s:":
        colon = data.index(b":", at + 2)
        length = int(data[at + 2 : colon])
        start = colon + 2  # past :"
        if data[start - 1 : start] != b'"' or data[start + length : start + length + 2] != b'";':
            raise ValueError(f"string at {at} is not {length} bytes long")
        return data[start : start + length].decode("utf-8"), start + length + 2
    if kind == b"a:":
        colon = data.index(b":", at + 2)
        count = int(data[at + 2 : colon])
        if data[colon + 1 : colon + 2] != b"{":
            raise ValueError(f"array at {at} has no {{")
        position, result = colon + 2, {}
        for _ in range(count):
            key, position = _unserialize_at(data, position)
            result[key], position = _unserialize_at(data, position)
        if data[position : position + 1] != b"}":
            raise ValueError(f"array at {at} does not close after {count} entries")
        return result, position + 1
    raise ValueError(f"unknown value at {at}: {data[at : at + 10]!r}")
