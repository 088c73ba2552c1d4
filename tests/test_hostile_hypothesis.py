"""Hostile input, part 2: hypothesis throws hostile values at every parameter of both doors,
in process through the factory's app, against the real stub upstream.

/api: key, secret, sign, dateline, method, api_name, _o_args (JSON text, and an object in a
JSON body), cache, result_type, lang, version, callback, as a query string, a urlencoded form,
a JSON body (values of any JSON type) and a multipart body (with file parts of odd names), and
key/secret as X-API-KEY / X-API-SECRET headers. /v1: Authorization and key headers, JSON bodies
per catalog path, query strings, file id path segments, unknown paths.

Every answer: no HTTP 5xx and no 4000/5000 (tests/hostile.py); every /api answer an envelope
with a `last_id`, read back from its format; an unknown method sends nothing upstream.

The values of the defects fixed just before this suite (lone surrogates, NaN/Infinity/1e999,
4,301-digit integers, SDK option keys in `_o_args`, nameless multipart parts, file ids with a
trailing newline, `/api//`, /v1 without a key) are among the hostile values; each also has its
own test in tests/test_request_hardening.py or tests/test_file_ownership.py.
Derandomized: CI runs the same examples every time."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, unquote_to_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.exceptions import HTTPException

from proxy.catalog import METHODS, find_method
from proxy.formats import RESULT_TYPES
from tests.conftest import TINY_PNG_B64, create_account
from tests.hostile import assert_api_answer, assert_v1_answer

# Small limits, so that "over the limit" costs kilobytes, not megabytes.
SMALL_LIMITS = {
    "MAX_CONTENT_LENGTH": 256 * 1024,
    "MAX_O_ARGS_BYTES": 16 * 1024,
    "MAX_UPLOAD_BYTES": 4 * 1024,
}
HOSTILE = settings(
    max_examples=400,
    derandomize=True,  # the same examples on every run: CI is reproducible
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),  # one app per test, shared by its examples
)

# ---- hostile values

NASTY_TEXTS = (
    "",
    "\ud800",  # a lone surrogate: not UTF-8 (raw bytes ED A0 80), or \ud800 in JSON
    "a\udfffb",
    " ",
    "\x00",
    "\t\r\n",
    "0",
    "-1",
    "1e999",
    "NaN",
    "null",
    "true",
    "[]",
    "{}",
    '{"a":',
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e/%2e%2e/",
    "http://169.254.169.254/latest/meta-data/",
    "file:///etc/passwd",
    "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><x>&e;</x>",
    "<script>alert(1)</script>",
    "]]><x/>",
    "'; DROP TABLE accounts; --",
    "{{7*7}}${7*7}",
    "${jndi:ldap://127.0.0.1/a}",
    "\u202egnp.exe",
    "\ufeffbom",
    "你好，世界",
    "🙂" * 40,
    "A" * 5000,
    's:4:"test";',
    "array (\n  0 => 1,\n)",
    "\x1b[31mred",
    "\\u0000",
    "v1/chat/completions\x00",
    "v1/chat/completions/../models",
    "/v1/models/",
    "V1/MODELS",
    " v1/models ",
    "v1/models?x=1",
    "v1//models",
    "http://127.0.0.1:1/v1/models",
    "v1\uff0fmodels",
    "v1/models\u200b",
    "ｖ1/models",
)
# Field names of the catalog's `_o_args`, so that hostile values land where they are read.
ARG_NAMES = (
    "model",
    "messages",
    "prompt",
    "input",
    "instruction",
    "n",
    "size",
    "response_format",
    "stream",
    "max_tokens",
    "temperature",
    "voice",
    "speed",
    "language",
    "file",
    "image",
    "mask",
    "filename",
    "purpose",
    "limit",
    "order",
    "after",
    "file_id",
    "imgid",
    "chat_id",
    "chatId",
    "thread_id",
    "user",
    "tools",
    # the SDK's options of the gateway's own upstream request: never a client's
    "extra_headers",
    "extra_query",
    "extra_body",
    "timeout",
)
# Stub models that sleep: a hostile value may name any model but these.
SLEEPING_MODELS = ("stub-hang", "stub-slow", "stub-stream-slow")

texts = st.one_of(st.text(max_size=30), st.sampled_from(NASTY_TEXTS)).filter(
    lambda text: text not in SLEEPING_MODELS
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from((2**63, -(2**63) - 1, 10**300, -(10**4299))),  # big, under 4,301 digits
    st.floats(),  # NaN and Infinity too: a JSON body carries them as NaN / Infinity tokens
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(ARG_NAMES) | texts, children, max_size=4)
    ),
    max_leaves=10,
)
# Header values as a server hands them over: latin-1 text, no CR/LF.
header_texts = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")),
    st.sampled_from(
        ("", " ", "A" * 8000, "你好".encode().decode("latin-1"), "a:b:c", ":", "\t", "null")
    ),
)


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


# `_o_args` texts the gateway must refuse with 4003 or read, never fail on.
HOSTILE_O_ARGS_TEXTS = (
    nested(31),
    nested(32),
    nested(33),
    nested(900),
    nested(100_000),
    "[" * 100_000,
    '{"messages":' + "[" * 5000 + "]" * 5000 + "}",
    '{"prompt":"' + "x" * (20 * 1024) + '"}',
    '{"prompt":' + "9" * 4300 + "}",
    '{"a":1,"a":2}',
    '{"prompt":"\\u0000"}',
    '\ufeff{"prompt":"bom"}',
    '{"prompt":"hi"} trailing',
    '{"prompt":"hi"',
    '{"stream":"yes"}',
    '{"stream":true,"n":2}',
    '{"stream":true,"prompt":"\\ud83d"}',
    '{"stream":true,"messages":[{"role":"user","content":"<![CDATA[x]]>\\u0000"}]}',
    '{"model":""}',
    '{"model":"' + "m" * 201 + '"}',
    '{"messages":[{"role":"user","content":{"nested":[1,2,{"x":null}]}}]}',
    '{"messages":[]}',
    '{"messages":[null]}',
    '{"file":"data:;base64,"}',
    '{"image":"data:image/png;base64,' + TINY_PNG_B64 + '","n":0}',
    '{"file":"file:///etc/passwd"}',
    '{"chat_id":{"a":1}}',
    '{"chat_id":"' + "c" * 5000 + '"}',
    '{"imgid":"١٢٣"}',
    '{"imgid":"0"}',
    '{"file_id":"file-../../x"}',
    '{"limit":0,"order":"sideways"}',
    '{"n":NaN}',
    '{"n":Infinity}',
    '{"messages":[{"role":"user","content":-Infinity}]}',
    '{"max_tokens":1e999}',
    '{"max_tokens":' + "9" * 4301 + "}",
    '{"prompt":"\\ud800"}',
    '{"messages":[{"role":"user","content":"a\\udfffb"}]}',
    '{"prompt":"hi","extra_headers":{"X-Hostile":"1"}}',
    '{"prompt":"hi","extra_query":{"hostile":"1"}}',
    '{"prompt":"hi","extra_body":{"model":"stub-500"}}',
    '{"prompt":"hi","timeout":0.001}',
    "null",
    "[]",
    '"text"',
    "1",
)

# ---- arguments that get a call as far as the upstream, per catalog method

AUDIO_B64 = base64.b64encode("你好 audio".encode()).decode()
VALID_ARGS = {
    "v1/models": {},
    "v1/chat/completions": {"messages": [{"role": "user", "content": "你好 hostile"}]},
    "v1/completions": {"prompt": "hostile"},
    "v1/edits": {"input": "hostile", "instruction": "fix it"},
    "v1/embeddings": {"input": ["a", "b"]},
    "v1/moderations": {"input": "hostile"},
    "v1/images/generations": {"prompt": "a cat"},
    "v1/images/edits": {"image": TINY_PNG_B64, "prompt": "a hat"},
    "v1/images/variations": {"image": TINY_PNG_B64},
    "v1/audio/transcriptions": {"file": AUDIO_B64, "filename": "a.mp3"},
    "v1/audio/translations": {"file": AUDIO_B64, "filename": "a.mp3"},
    "v1/audio/speech": {"input": "hostile", "voice": "alloy"},
    "v1/files": {},
    "v1/files/retrieve": {"file_id": "file-hostile"},
    "v1/files/delete": {"file_id": "file-hostile"},
    "v1/files/content": {"file_id": "file-hostile"},
    "images/get": {"imgid": "1"},
    "v1/messages": {
        "model": "gpt-4o-mini",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "你好 hostile"}],
    },
    "v1/responses": {"input": "hostile"},
    "v1/responses/retrieve": {"response_id": "resp_hostile"},
    "v1/responses/delete": {"response_id": "resp_hostile"},
    "v1/responses/input_items": {"response_id": "resp_hostile"},
    "feishu/auth": {},
}
# Not images/submit here: its job calls the stub from a background thread, after the call
# that submitted it, and would be counted against a later call (it has its own test).
CALLED_METHODS = tuple(VALID_ARGS)
assert set(CALLED_METHODS) | {"images/submit"} == {spec.name for spec in METHODS}


# The fields of VALID_ARGS that carry the caller's text, which the stub echoes back into the
# answer: hostile text there travels through every format.
TEXT_FIELDS = ("content", "prompt", "input", "instruction", "filename")


def with_text(value, text: str):
    """`value` with every caller's text field set to `text`."""
    if isinstance(value, list):
        return [with_text(item, text) for item in value]
    if isinstance(value, dict):
        return {
            name: text if name in TEXT_FIELDS else with_text(item, text)
            for name, item in value.items()
        }
    return value


@st.composite
def o_args_values(draw, method: str):
    """`_o_args` for a method: its working arguments, with hostile text in its text fields,
    one field hostile, an extra hostile field, a hostile JSON value of any type, or a hostile
    text sent as is."""
    base = VALID_ARGS.get(method, {})
    kind = draw(st.sampled_from(("valid", "text", "field", "any value", "raw text", "known text")))
    if kind == "valid":
        return base
    if kind == "text":
        return with_text(base, draw(texts))
    if kind == "field":
        name = draw(st.sampled_from(sorted(base) or ARG_NAMES) | st.sampled_from(ARG_NAMES))
        return {**base, name: draw(json_values)}
    if kind == "any value":
        return draw(json_values)
    if kind == "raw text":
        return RawText(draw(texts))
    return RawText(draw(st.sampled_from(HOSTILE_O_ARGS_TEXTS)))


class RawText(str):
    """An `_o_args` sent as this very text (not JSON-encoded first)."""


# Hostile values per /api parameter (None: the parameter left out).
HOSTILE_PARAMS = {
    "key": st.none() | json_values,
    "secret": st.none() | json_values,
    "sign": json_values,
    "dateline": st.integers() | json_values,
    "method": st.none() | json_values,
    "api_name": json_values,
    "cache": json_values,
    "result_type": json_values,
    "lang": json_values,
    "version": json_values,
    "callback": json_values,
}
WORKING_LANGS = ("cn", "en", "ru", "zh-CN", "ZH_cn", " EN ")


@st.composite
def api_params(draw, account: dict, methods=CALLED_METHODS):
    """A working call in every format, with hostile `_o_args` in most examples and up to three
    other parameters hostile or left out."""
    method = draw(st.sampled_from(methods))
    result_type = draw(st.sampled_from(RESULT_TYPES))
    params = {
        "key": account["key"],
        "secret": account["secret"],
        "method": method,
        "_o_args": draw(o_args_values(method)),
        "cache": draw(st.sampled_from(("yes", "no"))),
        "result_type": result_type,
        "lang": draw(st.sampled_from(WORKING_LANGS)),
    }
    if result_type in ("json", "jsonu") and draw(st.booleans()):
        params["callback"] = "jQuery123_456"
    for name in draw(st.lists(st.sampled_from(sorted(HOSTILE_PARAMS)), max_size=3, unique=True)):
        params[name] = draw(HOSTILE_PARAMS[name])
        if name == "api_name" and draw(st.booleans()):
            params.pop("method")  # api_name stands in for method only where method is absent
    return {name: value for name, value in params.items() if value is not None}


def as_text(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def as_json(value):
    return str(value) if isinstance(value, RawText) else value


def utf8(text: str) -> bytes:
    """Text as a client's bytes; a lone surrogate becomes the (invalid UTF-8) bytes a careless
    encoder writes for it."""
    return text.encode("utf-8", "surrogatepass")


def urlencoded(params: dict) -> str:
    return "&".join(
        f"{quote(utf8(name), safe='')}={quote(utf8(as_text(value)), safe='')}"
        for name, value in params.items()
    )


# File parts of multipart bodies: (part name or None for none, filename, bytes, content type).
odd_filenames = st.one_of(
    st.sampled_from(
        (
            "",
            "../../etc/passwd",
            "..\\..\\boot.ini",
            "a.png\x00.php",
            'quote".png',
            "名字.png",
            "🙂.mp3",
            "x" * 1000,
            "CON",
            ".htaccess",
            "a;b=c.png",
            " ",
            "\ud800.png",
        )
    ),
    st.text(max_size=20),
)
file_parts = st.lists(
    st.tuples(
        st.sampled_from(("file", "image", "mask", None)),
        st.none() | odd_filenames,
        st.sampled_from((base64.b64decode(TINY_PNG_B64), b"", b"\x00" * 10, b"ID3\xff\xfe")),
        st.sampled_from(("image/png", "audio/mpeg", "application/octet-stream", "", "x/../y")),
    ),
    max_size=3,
)


def multipart_body(fields: dict, files: list) -> tuple[bytes, str]:
    """A multipart/form-data body as browsers write it (quotes and CR/LF in names escaped);
    a file part whose name is None has no name at all."""
    boundary = "hostileBoundary7MA4YWxkTrZu0gW"
    escaped = {ord('"'): "%22", ord("\r"): "%0D", ord("\n"): "%0A"}

    def disposition(name: str | None, filename: str | None) -> bytes:
        header = "Content-Disposition: form-data"
        if name is not None:
            header += f'; name="{name.translate(escaped)}"'
        if filename is not None:
            header += f'; filename="{filename.translate(escaped)}"'
        return utf8(header)

    parts = [
        disposition(name, None) + b"\r\n\r\n" + utf8(as_text(value))
        for name, value in fields.items()
    ]
    for name, filename, content, content_type in files:
        head = disposition(name, filename) + b"\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n".encode()
        parts.append(head + b"\r\n" + content)
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return body + b"--" + boundary.encode() + b"--\r\n", f"multipart/form-data; boundary={boundary}"


def send_api(
    client, transport: str, params: dict, headers=None, files=(), path="/api", ascii_json=True
):
    """The call as a client would send it by `transport`; returns (what was sent, answer).
    A JSON body writes non-ASCII as \\u escapes (`ascii_json`) or as UTF-8."""
    headers = dict(headers or {})
    sent = {"transport": transport, "path": path, "params": params, "headers": headers}
    if "//" in path:  # the test client reads //api as a host name: set the path as sent
        client = PathAs(client, path)
        path = "/"
    if files:
        sent["files"] = [(name, filename, len(content)) for name, filename, content, _ in files]
    if transport in ("get", "post-query"):
        verb = "GET" if transport == "get" else "POST"
        return sent, client.open(f"{path}?{urlencoded(params)}", method=verb, headers=headers)
    if transport == "form":
        return sent, client.post(
            path,
            data=urlencoded(params),
            content_type="application/x-www-form-urlencoded",
            headers=headers,
        )
    if transport == "json":
        body = {name: as_json(value) for name, value in params.items()}
        text = json.dumps(body, ensure_ascii=ascii_json)
        return sent, client.post(
            path, data=utf8(text), content_type="application/json", headers=headers
        )
    body, content_type = multipart_body(params, list(files))
    return sent, client.post(path, data=body, content_type=content_type, headers=headers)


class PathAs:
    """A test client whose requests carry `path` as their PATH_INFO, as a server passes on
    `GET //api HTTP/1.1`."""

    def __init__(self, client, path: str):
        self.client, self.path = client, path

    def open(self, *args, **kwargs):
        return self.client.open(*args, environ_overrides={"PATH_INFO": self.path}, **kwargs)

    def post(self, *args, **kwargs):
        return self.open(*args, method="POST", **kwargs)


def may_reach_upstream(params: dict, transport: str) -> bool:
    """Whether /api may call the upstream for these parameters: only a catalog method can."""
    method, api_name = params.get("method"), params.get("api_name")
    if transport != "json":  # every value travels as text
        method, api_name = (None if v is None else as_text(v) for v in (method, api_name))
    if any(value is not None and not isinstance(value, str) for value in (method, api_name)):
        return False  # a JSON body's method of another type is refused before the catalog
    return find_method((method or api_name or "").strip()) is not None


# ---- fixtures


@pytest.fixture
def hostile_app(make_app):
    return make_app(**SMALL_LIMITS)


@pytest.fixture
def hostile_client(hostile_app):
    return hostile_app.test_client()


@pytest.fixture
def victim(hostile_app):
    """The account whose valid key and secret most examples carry."""
    return create_account(hostile_app.test_cli_runner(), "victim")


def bearer(account: dict) -> dict:
    return {"Authorization": f"Bearer {account['key']}:{account['secret']}"}


# ---- /api


@HOSTILE
@given(
    data=st.data(),
    transport=st.sampled_from(("get", "post-query", "form", "json")),
    ascii_json=st.booleans(),
)
def test_api_hostile_parameters_get_an_envelope(
    hostile_client, victim, stub, data, transport, ascii_json
):
    params = data.draw(api_params(victim))
    stub.reset()
    sent, answer = send_api(hostile_client, transport, params, ascii_json=ascii_json)
    assert_api_answer(sent, answer)
    if not may_reach_upstream(params, transport):
        assert stub.requests_seen() == [], f"an unknown method reached the upstream: {sent}"


@HOSTILE
@given(data=st.data(), files=file_parts)
def test_api_hostile_multipart_bodies_get_an_envelope(hostile_client, victim, stub, data, files):
    params = data.draw(api_params(victim))
    stub.reset()
    sent, answer = send_api(hostile_client, "multipart", params, files=files)
    assert_api_answer(sent, answer)
    if not may_reach_upstream(params, "multipart"):
        assert stub.requests_seen() == [], f"an unknown method reached the upstream: {sent}"


@HOSTILE
@given(
    data=st.data(),
    key=header_texts,
    secret=header_texts,
    transport=st.sampled_from(("get", "form", "json")),
)
def test_api_hostile_credential_headers_get_an_envelope(
    hostile_client, victim, data, key, secret, transport
):
    params = data.draw(api_params(victim))
    params.pop("key", None)
    params.pop("secret", None)
    headers = {
        "X-API-KEY": data.draw(st.sampled_from((victim["key"], key))),
        "X-API-SECRET": data.draw(st.sampled_from((victim["secret"], secret))),
    }
    sent, answer = send_api(hostile_client, transport, params, headers=headers)
    assert_api_answer(sent, answer)


@HOSTILE
@given(
    data=st.data(),
    method=st.sampled_from(CALLED_METHODS),
    o_args=st.sampled_from(HOSTILE_O_ARGS_TEXTS),
    transport=st.sampled_from(("get", "form", "json", "multipart")),
    result_type=st.sampled_from(RESULT_TYPES),
)
def test_api_hostile_o_args_texts_get_an_envelope(
    hostile_client, victim, data, method, o_args, transport, result_type
):
    params = {
        "key": victim["key"],
        "secret": victim["secret"],
        "method": method,
        "_o_args": o_args,
        "result_type": result_type,
        "cache": data.draw(st.sampled_from(("yes", "no"))),
    }
    sent, answer = send_api(hostile_client, transport, params)
    assert_api_answer(sent, answer)


@HOSTILE
@given(o_args=json_values | st.just(VALID_ARGS["v1/images/generations"]))
def test_images_submit_and_get_with_hostile_o_args_get_an_envelope(hostile_client, victim, o_args):
    for method in ("images/submit", "images/get"):
        params = {"key": victim["key"], "secret": victim["secret"], "method": method}
        sent, answer = send_api(hostile_client, "json", {**params, "_o_args": o_args})
        assert_api_answer(sent, answer)


@HOSTILE
@given(
    fragments=st.lists(
        st.sampled_from(
            (
                "&",
                "&&",
                "=",
                "==",
                "%",
                "%ZZ",
                "%FF%FE",
                "%C0%AF",
                "+",
                ";",
                "key",
                "method=",
                "method=%00",
                "api_name=v1/models",
                "api_name=v1%2Fmodels",
                "_o_args=%7B",
                "_o_args=",
                "result_type=xml",
                "result_type=%20JSON%20",
                "callback=",
                "lang=%E4%BD%A0",
                "a[]=1",
                "a[b]=2",
                "method[]=v1/models",
            )
        ),
        max_size=8,
    )
)
def test_api_hostile_raw_query_strings_get_an_envelope(hostile_client, victim, stub, fragments):
    query = f"key={victim['key']}&secret={victim['secret']}&" + "&".join(fragments)
    stub.reset()
    answer = hostile_client.get(f"/api?{query}")
    assert_api_answer(query, answer)


@HOSTILE
@given(
    platform=st.sampled_from(("openai", "OpenAI", "feishu", "..", "%2e%2e", "你好", "a%00b"))
    | st.text(st.characters(codec="utf-8", exclude_characters="/%"), min_size=1, max_size=20),
    method=st.sampled_from(CALLED_METHODS) | texts,
    slash=st.sampled_from(("", "/")),
)
def test_platform_custom_urls_with_hostile_platforms_get_an_envelope(
    hostile_app, hostile_client, victim, stub, platform, method, slash
):
    path = f"/{quote(platform, safe='%')}/custom{slash}"
    endpoint, _ = hostile_app.url_map.bind("localhost").match(path_of(path), method="GET")
    assert endpoint == "api.PlatformCall", f"{path} is not an onebound URL"
    params = {"key": victim["key"], "secret": victim["secret"], "method": method}
    stub.reset()
    sent, answer = send_api(hostile_client, "get", params, path=path)
    assert_api_answer(sent, answer)
    spec = find_method(method.strip())
    if spec is None or platform != spec.platform:  # not a call of that platform's method
        assert stub.requests_seen() == [], f"an unknown method reached the upstream: {sent}"


@HOSTILE
@given(
    content_type=st.sampled_from(
        (
            "application/json; charset=utf-16",
            "application/json; charset=latin-1",
            "application/x-www-form-urlencoded; charset=latin-1",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=nope",
            "multipart/mixed; boundary=x",
            "text/xml",
            "application/javascript",
            "",
            "\u00e9/\u00e9",
        )
    ),
    body_as=st.sampled_from(("json", "form")),
)
def test_api_bodies_under_hostile_content_types_get_an_envelope(
    hostile_client, victim, content_type, body_as
):
    params = {"key": victim["key"], "secret": victim["secret"], "method": "v1/models"}
    body = json.dumps(params) if body_as == "json" else urlencoded(params)
    answer = hostile_client.post("/api", data=utf8(body), headers={"Content-Type": content_type})
    assert_api_answer({"content_type": content_type, "body": body}, answer)


@HOSTILE
@given(
    count=st.sampled_from((999, 1000, 1001, 5000)),
    transport=st.sampled_from(("get", "form", "multipart")),
)
def test_api_with_thousands_of_parameters_gets_an_envelope(
    hostile_client, victim, count, transport
):
    params = {"key": victim["key"], "secret": victim["secret"], "method": "v1/models"}
    params.update({f"p{number}": "x" for number in range(count)})
    sent, answer = send_api(hostile_client, transport, params)
    assert_api_answer({"transport": transport, "parameters": len(params)}, answer)


@HOSTILE
@given(
    path=st.sampled_from(("/api//", "//api", "//api//", "/openai/custom//", "//openai//custom//")),
    transport=st.sampled_from(("get", "form")),
)
def test_api_paths_with_extra_slashes_are_answered_not_redirected(
    hostile_client, victim, path, transport
):
    params = {"key": victim["key"], "secret": victim["secret"], "method": "v1/models"}
    sent, answer = send_api(hostile_client, transport, params, path=path)
    assert_api_answer(sent, answer)


@HOSTILE
@given(
    verb=st.sampled_from(("PUT", "PATCH", "DELETE")),
    path=st.sampled_from(("/api", "/api/", "/openai/custom", "/openai/custom/")),
)
def test_api_wrong_verbs_get_an_envelope(hostile_client, victim, verb, path):
    query = urlencoded({"key": victim["key"], "secret": victim["secret"], "method": "v1/models"})
    answer = hostile_client.open(f"{path}?{query}", method=verb)
    sent = {"verb": verb, "path": path}
    assert answer.status_code == 405, f"a wrong verb answered HTTP {answer.status_code}"
    assert_api_answer(sent, answer, status=405)


# ---- /v1

V1_POST_PATHS = {
    route.split(" ", 1)[1]: spec.name
    for spec in METHODS
    for route in spec.openai_routes
    if route.startswith("POST ")
}


@HOSTILE
@given(
    authorization=header_texts
    | st.sampled_from(("Bearer", "Bearer ", "Bearer :", "Bearer k:", "Bearer :s", "Basic a2V5"))
    | st.builds(lambda text: f"Bearer {text}", header_texts),
    other=st.dictionaries(
        st.sampled_from(("api-key", "X-API-KEY", "X-API-SECRET", "X-Gateway-Cache")), header_texts
    ),
    path=st.sampled_from(("/v1/models", "/v1/chat/completions", "/v1/files")),
)
def test_v1_hostile_key_headers_never_fail_the_gateway(hostile_client, authorization, other, path):
    headers = {"Authorization": authorization, **other}
    body = VALID_ARGS.get(V1_POST_PATHS.get(path, ""), {})
    verb = "POST" if path in V1_POST_PATHS else "GET"
    answer = hostile_client.open(path, method=verb, headers=headers, json=body)
    sent = {"path": path, "headers": headers}
    assert_v1_answer(sent, answer)
    if answer.headers.get("X-Error-Code") in ("4004", "4005", "4014"):
        assert answer.status_code == 401, f"a refused key is HTTP {answer.status_code}: {sent}"


@HOSTILE
@given(
    data=st.data(),
    path=st.sampled_from(sorted(V1_POST_PATHS)),
    content_type=st.sampled_from(
        ("application/json", "application/json; charset=latin-1", "text/plain", "")
    ),
    ascii_json=st.booleans(),
)
def test_v1_hostile_json_bodies_never_fail_the_gateway(
    hostile_client, victim, data, path, content_type, ascii_json
):
    body = data.draw(o_args_values(V1_POST_PATHS[path]))
    text = body if isinstance(body, RawText) else json.dumps(body, ensure_ascii=ascii_json)
    answer = hostile_client.post(
        path, data=utf8(text), headers={**bearer(victim), "Content-Type": content_type}
    )
    assert_v1_answer({"path": path, "content_type": content_type, "body": text}, answer)


@HOSTILE
@given(
    path=st.sampled_from(sorted(p for p in V1_POST_PATHS if "images" in p or "audio" in p))
    | st.just("/v1/files"),
    fields=st.dictionaries(st.sampled_from(ARG_NAMES) | texts, texts, max_size=5),
    files=file_parts,
)
def test_v1_hostile_multipart_uploads_never_fail_the_gateway(
    hostile_client, victim, path, fields, files
):
    body, content_type = multipart_body(fields, files)
    answer = hostile_client.post(path, data=body, content_type=content_type, headers=bearer(victim))
    sent = {"path": path, "fields": fields, "files": [(n, f, len(c)) for n, f, c, _ in files]}
    assert_v1_answer(sent, answer)


@HOSTILE
@given(
    path=st.sampled_from(("/v1/models", "/v1/files")),
    query=st.dictionaries(st.sampled_from(("limit", "order", "after", "purpose")) | texts, texts),
)
def test_v1_hostile_query_strings_never_fail_the_gateway(hostile_client, victim, path, query):
    text = urlencoded(query)
    answer = hostile_client.get(f"{path}?{text}", headers=bearer(victim))
    assert_v1_answer({"path": path, "query": text}, answer)


# File ids as path segments; a trailing newline is a defect being fixed (tested apart below).
file_ids = st.one_of(
    st.sampled_from(
        (
            "..",
            ".",
            "%2e%2e",
            "..%2F..%2Fv1%2Fmodels",
            "%2F",
            "file-a%0Ab",
            "file-a%00",
            "%0Afile-a",
            "file-a%20",
            "file-" + "a" * 65,
            "file-a%3Fx%3D1",
            "file-a%23x",
            "file-abc%0A",
            "file-abc%0D%0A",
            "file-%E4%BD%A0",
            "%FF%FE",
            "file-a/content",
        )
    ),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=30).map(
        lambda text: quote(text, safe="")
    ),
)


FILE_ROUTES = (("GET", "/v1/files/{}"), ("DELETE", "/v1/files/{}"), ("GET", "/v1/files/{}/content"))


@HOSTILE
@given(file_id=file_ids, route=st.sampled_from(FILE_ROUTES))
def test_v1_hostile_file_ids_never_reach_the_upstream(hostile_client, victim, stub, file_id, route):
    """Not one of the victim's files (it has none), whatever the id: nothing goes upstream."""
    verb, template = route
    path = template.format(file_id)
    stub.reset()
    answer = hostile_client.open(path, method=verb, headers=bearer(victim))
    assert_v1_answer({"verb": verb, "path": path}, answer)
    assert stub.requests_seen() == [], f"{verb} {path} reached the upstream"


def path_of(url_path: str) -> str:
    """The path as WSGI hands it to routing: percent-decoded, read as latin-1."""
    return unquote_to_bytes(url_path).decode("latin-1")


@HOSTILE
@given(
    segments=st.lists(
        file_ids | st.sampled_from(("chat", "completions", "models", "")), max_size=4
    ),
    verb=st.sampled_from(("GET", "POST", "PUT", "PATCH", "DELETE")),
)
def test_v1_unserved_paths_are_404_or_405_and_never_reach_the_upstream(
    hostile_app, hostile_client, victim, stub, segments, verb
):
    path = "/v1/" + "/".join(segments)
    try:
        endpoint, _ = hostile_app.url_map.bind("localhost").match(path_of(path), method=verb)
    except HTTPException:  # %2F decoded into a path no rule takes: still answered below
        endpoint = None
    stub.reset()
    answer = hostile_client.open(path, method=verb, headers=bearer(victim), json={})
    assert_v1_answer({"verb": verb, "path": path}, answer)
    if endpoint in ("openai unknown", "openai unknown root"):  # no path, or not this verb
        assert answer.status_code in (404, 405), f"{verb} {path}: HTTP {answer.status_code}"
        assert stub.requests_seen() == [], f"{verb} {path} reached the upstream"
