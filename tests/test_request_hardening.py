"""Hostile requests found by an outside probe, over real HTTP to gunicorn: no SDK option comes
from a client, inputs no encoder can send on are 4003s naming the field (with their usage
row), no path is ever redirected, an oversize chunked body is refused whole, and /v1 answers
a missing or malformed API key with 401."""

from __future__ import annotations

import json

import openai
import pytest
import requests

from tests.conftest import CHAT_ARGS
from tests.served import ServedGateway

MAX_BODY_BYTES = 256 * 1024  # small, so the oversize bodies below stay small too


@pytest.fixture(scope="module")
def served(tmp_path_factory, stub):
    workdir = tmp_path_factory.mktemp("hardening")
    gateway = ServedGateway.on_stub(workdir, stub, workers=1, MAX_BODY_BYTES=str(MAX_BODY_BYTES))
    gateway.start()
    gateway.account = gateway.flask_json("accounts", "create", "hardening")
    yield gateway
    gateway.stop()


@pytest.fixture
def account(served, stub):
    stub.reset()
    return served.account


def api_json_body(served, account, body_text: str) -> dict:
    """POST /api with `body_text` as the JSON body after the credentials and method."""
    head = json.dumps(
        {"key": account["key"], "secret": account["secret"], "method": "v1/chat/completions"}
    )[:-1]
    response = requests.post(
        served.base + "/api",
        data=(head + "," + body_text + "}").encode("utf-8"),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200
    return response.json()


def v1_chat(served, account, body_text: str) -> requests.Response:
    return requests.post(
        served.base + "/v1/chat/completions",
        data=body_text.encode("utf-8"),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {account['key']}:{account['secret']}",
        },
        timeout=30,
    )


def chat_requests_upstream(stub) -> list[dict]:
    return stub.requests_seen("/v1/chat/completions")


# -- no SDK option comes from a client ---------------------------------------------------------

SDK_OPTIONS = {
    "extra_headers": {"Authorization": "Bearer sk-client", "OpenAI-Project": "p"},
    "extra_query": {"x": "1"},
    "extra_body": {"x": 1},
    "timeout": 90.5,
}


@pytest.mark.parametrize("option", sorted(SDK_OPTIONS))
def test_sdk_option_in_o_args_is_4003_on_api_and_nothing_goes_upstream(
    served, account, stub, option
):
    o_args = {**CHAT_ARGS, option: SDK_OPTIONS[option]}
    envelope = api_json_body(served, account, f'"_o_args":{json.dumps(o_args)}')
    assert envelope["error_code"] == "4003"
    assert (
        f"_o_args.{option}: is an option of the gateway's own upstream request"
        in (envelope["reason"])
    )
    assert envelope["last_id"]
    assert chat_requests_upstream(stub) == []


@pytest.mark.parametrize("option", sorted(SDK_OPTIONS))
def test_sdk_option_in_v1_body_is_400_and_nothing_goes_upstream(served, account, stub, option):
    response = v1_chat(served, account, json.dumps({**CHAT_ARGS, option: SDK_OPTIONS[option]}))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "4003"
    assert option in response.json()["error"]["message"]
    assert chat_requests_upstream(stub) == []


def test_unknown_field_reaches_the_upstream_body_only(served, account, stub):
    response = v1_chat(served, account, json.dumps({**CHAT_ARGS, "enable_search": True}))
    assert response.status_code == 200
    (seen,) = chat_requests_upstream(stub)
    assert seen["body"]["enable_search"] is True
    assert seen["query_string"] == ""
    assert seen["headers"]["authorization"] == "Bearer sk-upstream-secret"
    assert "openai-project" not in seen["headers"]


# -- inputs that cannot be sent on are 4003s naming the field ----------------------------------

LONG_INTEGER = "9" * 4301
UNSENDABLE_ARGS = {
    "lone surrogate in content": (
        '{"messages":[{"role":"user","content":"\\ud800"}]}',
        "_o_args.messages[0].content holds a lone UTF-16 surrogate",
    ),
    "NaN": (
        '{"messages":[{"role":"user","content":"x"}],"temperature":NaN}',
        "_o_args.temperature: NaN is not a JSON number",
    ),
    "Infinity": (
        '{"messages":[{"role":"user","content":"x"}],"temperature":-Infinity}',
        "_o_args.temperature: -Infinity is not a JSON number",
    ),
    "1e999": (
        '{"messages":[{"role":"user","content":"x"}],"temperature":1e999}',
        "_o_args.temperature: the number 1e999 is too large for a 64-bit float",
    ),
    "4,301-digit integer": (
        '{"messages":[{"role":"user","content":"x"}],"seed":' + LONG_INTEGER + "}",
        "_o_args.seed: an integer of 4301 digits is longer than the 4300 accepted",
    ),
}


@pytest.mark.parametrize("case", sorted(UNSENDABLE_ARGS))
def test_unsendable_o_args_object_is_4003_naming_the_field(served, account, stub, case):
    o_args, reason = UNSENDABLE_ARGS[case]
    envelope = api_json_body(served, account, f'"_o_args":{o_args}')
    assert envelope["error_code"] == "4003"
    assert reason in envelope["reason"]
    assert envelope["last_id"]
    assert chat_requests_upstream(stub) == []


@pytest.mark.parametrize("case", sorted(UNSENDABLE_ARGS))
def test_unsendable_o_args_text_is_4003_naming_the_field(served, account, stub, case):
    o_args, reason = UNSENDABLE_ARGS[case]
    query = {**_credentials(account), "method": "v1/chat/completions", "_o_args": o_args}
    envelope = requests.get(served.base + "/api", params=query, timeout=30).json()
    assert envelope["error_code"] == "4003"
    assert reason in envelope["reason"]
    assert envelope["last_id"]
    assert chat_requests_upstream(stub) == []


@pytest.mark.parametrize("case", sorted(UNSENDABLE_ARGS))
def test_unsendable_v1_body_is_400_naming_the_field(served, account, stub, case):
    o_args, reason = UNSENDABLE_ARGS[case]
    response = v1_chat(served, account, o_args)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "4003"
    assert reason.removeprefix("_o_args.") in response.json()["error"]["message"]
    assert chat_requests_upstream(stub) == []


@pytest.mark.parametrize("field", ["key", "secret", "method"])
def test_lone_surrogate_in_a_parameter_is_4003_with_its_usage_row(served, account, field):
    body = {**_credentials(account), "method": "v1/chat/completions", "_o_args": CHAT_ARGS}
    body[field] = "SURROGATE"
    text = json.dumps(body).replace('"SURROGATE"', '"a\\ud800b"')
    response = requests.post(
        served.base + "/api", data=text, headers={"Content-Type": "application/json"}, timeout=30
    )
    envelope = response.json()
    assert envelope["error_code"] == "4003"
    assert f"{field} holds a lone UTF-16 surrogate" in envelope["reason"]
    assert envelope["last_id"]


UNNAMED_PART = (
    b"--B\r\nContent-Disposition: form-data\r\n\r\nhello\r\n"
    b'--B\r\nContent-Disposition: form-data; name="method"\r\n\r\nv1/files\r\n--B--\r\n'
)


def test_multipart_part_without_a_name_is_4003_on_api(served, account):
    response = requests.post(
        served.base + "/api",
        params=_credentials(account),
        data=UNNAMED_PART,
        headers={"Content-Type": "multipart/form-data; boundary=B"},
        timeout=30,
    )
    envelope = response.json()
    assert envelope["error_code"] == "4003"
    assert "a multipart part has no name" in envelope["reason"]
    assert envelope["last_id"]


def test_multipart_part_without_a_name_is_400_on_v1(served, account, stub):
    response = requests.post(
        served.base + "/v1/files",
        data=UNNAMED_PART,
        headers={
            "Content-Type": "multipart/form-data; boundary=B",
            "Authorization": f"Bearer {account['key']}:{account['secret']}",
        },
        timeout=30,
    )
    assert response.status_code == 400
    assert "a multipart part has no name" in response.json()["error"]["message"]
    assert stub.requests_seen("/v1/files") == []


# -- no redirects ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api//", "//api", "/openai/custom//", "/api///"])
def test_doubled_slashes_are_served_not_redirected(served, account, path):
    query = {**_credentials(account), "method": "v1/models"}
    response = requests.get(served.base + path, params=query, allow_redirects=False, timeout=30)
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert response.json()["error_code"] == "0000"


@pytest.mark.parametrize("path", ["/v1//models", "/health/", "/api/methods/", "//health"])
def test_other_paths_are_never_redirected(served, account, path):
    response = requests.get(
        served.base + path,
        headers={"Authorization": f"Bearer {account['key']}:{account['secret']}"},
        allow_redirects=False,
        timeout=30,
    )
    assert response.status_code == 200
    assert "Location" not in response.headers


# -- oversize chunked bodies -------------------------------------------------------------------


def _chunked(data: bytes, size: int = 64 * 1024):
    """A generator body: requests sends it with Transfer-Encoding: chunked."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _oversize_form(account) -> bytes:
    filler = "x" * (MAX_BODY_BYTES + 1024)
    return (
        f"key={account['key']}&secret={account['secret']}&method=v1/chat/completions"
        f"&_o_args={json.dumps(CHAT_ARGS)}&filler={filler}&result_type=xml"
    ).encode()


def test_oversize_chunked_form_is_refused_whole_on_api(served, account, stub):
    response = requests.post(
        served.base + "/api",
        data=_chunked(_oversize_form(account)),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    envelope = response.json()  # json: the body, and result_type=xml in it, was never read
    assert envelope["error_code"] == "4003"
    assert f"the request body is larger than {MAX_BODY_BYTES} bytes" in envelope["reason"]
    assert envelope["last_id"]
    assert chat_requests_upstream(stub) == []


def test_oversize_chunked_body_is_413_on_v1(served, account, stub):
    body = json.dumps({**CHAT_ARGS, "filler": "x" * (MAX_BODY_BYTES + 1024)}).encode()
    response = requests.post(
        served.base + "/v1/chat/completions",
        data=_chunked(body),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {account['key']}:{account['secret']}",
        },
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "4003"
    assert chat_requests_upstream(stub) == []


def test_chunked_form_within_the_limit_is_served_whole(served, account):
    form = (
        f"key={account['key']}&secret={account['secret']}&method=v1/models&result_type=xml"
    ).encode()
    response = requests.post(
        served.base + "/api",
        data=_chunked(form, size=7),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert response.headers["X-Error-Code"] == "0000"
    assert response.headers["Content-Type"] == "application/xml; charset=utf-8"


# -- /v1 authentication status -----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer KEYONLY"}, {"Authorization": "Basic xyz"}],
    ids=["missing", "no secret", "not bearer"],
)
def test_v1_missing_or_malformed_key_is_401(served, headers):
    response = requests.get(served.base + "/v1/models", headers=headers, timeout=30)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "4014"
    assert response.json()["error"]["type"] == "authentication_error"


def test_sdk_raises_authentication_error_on_a_key_without_secret(served):
    client = openai.OpenAI(base_url=served.base + "/v1", api_key="KEYONLY", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def _credentials(account) -> dict:
    return {"key": account["key"], "secret": account["secret"]}
