"""Uploaded files belong to the account that uploaded them, on both doors: another account
neither lists nor reaches them (4003 on /api, HTTP 404 on /v1), and its calls for them make
no upstream request. File ids are checked against a strict pattern before any upstream call."""

from __future__ import annotations

import base64
import io
import json

import httpx2
import openai
import pytest
import requests
from sqlalchemy import text

from tests.conftest import create_account

UPSTREAM_KEY = {"Authorization": "Bearer sk-upstream-secret"}  # conftest's OPENAI_API_KEY


@pytest.fixture
def alice(runner):
    return create_account(runner, "alice")


@pytest.fixture
def bob(runner):
    return create_account(runner, "bob")


def api(client, account: dict, method: str, o_args: dict) -> dict:
    response = client.get(
        "/api",
        query_string={
            "key": account["key"],
            "secret": account["secret"],
            "method": method,
            "_o_args": json.dumps(o_args),
            "lang": "en",
        },
    )
    assert response.status_code == 200
    return response.get_json()


def bearer(account: dict) -> dict:
    return {"Authorization": f"Bearer {account['key']}:{account['secret']}"}


def upload(client, account: dict, content: bytes = b"line one\n", name: str = "a.txt") -> str:
    envelope = api(
        client,
        account,
        "v1/files",
        {"file": base64.b64encode(content).decode(), "filename": name, "purpose": "assistants"},
    )
    assert envelope["error_code"] == "0000", envelope
    return envelope["response"]["id"]


def listed_ids(client, account: dict, **o_args) -> list[str]:
    return [entry["id"] for entry in api(client, account, "v1/files", o_args)["response"]["data"]]


def not_a_file_of_this_account(file_id: str) -> str:
    return (
        f"Param error: _o_args.file_id: {file_id} is not a file of this account; "
        "v1/files lists this account's files"
    )


def test_another_accounts_file_is_not_listed(client, alice, bob):
    upload(client, alice)
    envelope = api(client, bob, "v1/files", {})
    assert envelope["error_code"] == "2000"
    assert envelope["response"] == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


def test_a_list_shows_exactly_the_callers_own_files_newest_first(client, alice, bob):
    first = upload(client, alice, b"1")
    bobs = upload(client, bob, b"2")
    second = upload(client, alice, b"3")
    assert listed_ids(client, alice) == [second, first]
    assert listed_ids(client, bob) == [bobs]


def test_a_listed_file_is_the_upstreams_file_object(client, alice):
    envelope = api(
        client,
        alice,
        "v1/files",
        {"file": base64.b64encode(b"abc").decode(), "filename": "n.txt", "purpose": "batch"},
    )
    uploaded = envelope["response"]
    listing = api(client, alice, "v1/files", {})["response"]
    assert listing["data"] == [uploaded]
    assert (listing["first_id"], listing["last_id"]) == (uploaded["id"], uploaded["id"])


@pytest.mark.parametrize("method", ["v1/files/retrieve", "v1/files/content", "v1/files/delete"])
def test_another_accounts_file_is_4003_and_reaches_no_upstream(client, alice, bob, stub, method):
    file_id = upload(client, alice)
    before = len(stub.requests_seen())
    envelope = api(client, bob, method, {"file_id": file_id})
    assert envelope["error_code"] == "4003"
    assert envelope["reason"] == not_a_file_of_this_account(file_id)
    assert envelope["response"] == []
    assert len(stub.requests_seen()) == before


def test_the_owner_still_reaches_its_file_after_another_account_tried_to_delete_it(
    client, alice, bob
):
    file_id = upload(client, alice)
    assert api(client, bob, "v1/files/delete", {"file_id": file_id})["error_code"] == "4003"
    assert api(client, alice, "v1/files/retrieve", {"file_id": file_id})["error_code"] == "0000"
    content = api(client, alice, "v1/files/content", {"file_id": file_id})["response"]
    assert base64.b64decode(content["content"]) == b"line one\n"
    assert listed_ids(client, alice) == [file_id]


def test_a_deleted_file_is_gone_from_the_list_and_not_found_without_an_upstream_call(
    client, alice, stub
):
    file_id = upload(client, alice)
    deleted = api(client, alice, "v1/files/delete", {"file_id": file_id})
    assert (deleted["error_code"], deleted["response"]["deleted"]) == ("0000", True)
    assert listed_ids(client, alice) == []
    before = len(stub.requests_seen())
    gone = api(client, alice, "v1/files/retrieve", {"file_id": file_id})
    assert (gone["error_code"], gone["reason"]) == ("4003", not_a_file_of_this_account(file_id))
    assert len(stub.requests_seen()) == before


def test_deleting_an_own_file_the_upstream_lost_answers_its_404_and_unlists_it(client, alice, stub):
    file_id = upload(client, alice)
    requests.delete(f"{stub.base_url}/files/{file_id}", headers=UPSTREAM_KEY, timeout=30)
    envelope = api(client, alice, "v1/files/delete", {"file_id": file_id})
    assert (envelope["error_code"], envelope["reason"]) == (
        "4003",
        "Param error: the upstream refused the arguments (HTTP 404): "
        f"No such File object: {file_id}",
    )
    assert envelope["response"]["error"]["code"] == "file_not_found"
    assert listed_ids(client, alice) == []


def test_an_own_file_the_upstream_lost_is_404_on_v1(client, alice, stub):
    file_id = upload(client, alice)
    requests.delete(f"{stub.base_url}/files/{file_id}", headers=UPSTREAM_KEY, timeout=30)
    response = client.get(f"/v1/files/{file_id}", headers=bearer(alice))
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "4003"
    assert response.get_json()["error"]["upstream_error"]["code"] == "file_not_found"


def test_a_file_uploaded_upstream_outside_the_gateway_is_not_found(client, alice, stub):
    outside = requests.post(
        f"{stub.base_url}/files",
        headers=UPSTREAM_KEY,
        data={"purpose": "assistants"},
        files={"file": ("x.txt", b"x")},
        timeout=30,
    ).json()["id"]
    envelope = api(client, alice, "v1/files/retrieve", {"file_id": outside})
    assert (envelope["error_code"], envelope["reason"]) == (
        "4003",
        not_a_file_of_this_account(outside),
    )
    assert outside not in listed_ids(client, alice)


def test_pages_of_own_files_hold_limit_files_and_chain_by_last_id(client, alice, bob):
    mine = []
    for n in range(3):
        mine.append(upload(client, alice, str(n).encode()))
        upload(client, bob, b"other")
    page = api(client, alice, "v1/files", {"limit": 2, "order": "asc"})["response"]
    assert [entry["id"] for entry in page["data"]] == mine[:2]
    assert (page["first_id"], page["last_id"], page["has_more"]) == (mine[0], mine[1], True)
    rest = api(client, alice, "v1/files", {"limit": 2, "order": "asc", "after": mine[1]})
    assert [entry["id"] for entry in rest["response"]["data"]] == mine[2:]
    assert rest["response"]["has_more"] is False
    newest = api(client, alice, "v1/files", {"limit": 1, "after": mine[2]})["response"]
    assert [entry["id"] for entry in newest["data"]] == [mine[1]]


def test_a_list_filters_by_purpose(client, alice):
    upload(client, alice)
    batch = api(
        client,
        alice,
        "v1/files",
        {"file": base64.b64encode(b"{}").decode(), "filename": "b.jsonl", "purpose": "batch"},
    )["response"]["id"]
    assert listed_ids(client, alice, purpose="batch") == [batch]


def test_another_accounts_file_as_the_cursor_is_4015_and_reaches_no_upstream(
    client, alice, bob, stub
):
    file_id = upload(client, alice)
    before = len(stub.requests_seen())
    envelope = api(client, bob, "v1/files", {"after": file_id})
    assert envelope["error_code"] == "4015"
    assert f"_o_args.after='{file_id}' is not a file id of this list" in envelope["reason"]
    assert len(stub.requests_seen()) == before


@pytest.mark.parametrize("method", ["v1/files/retrieve", "v1/files/content", "v1/files/delete"])
def test_a_file_id_with_a_trailing_newline_is_4003_and_reaches_no_upstream(
    client, alice, stub, method
):
    before = len(stub.requests_seen())
    envelope = api(client, alice, method, {"file_id": "file-abc\n"})
    assert envelope["error_code"] == "4003"
    assert envelope["reason"] == "Param error: _o_args.file_id: must be a file id: file-..."
    assert len(stub.requests_seen()) == before


def test_a_cursor_with_a_trailing_newline_is_4015_and_reaches_no_upstream(client, alice, stub):
    file_id = upload(client, alice)
    before = len(stub.requests_seen())
    envelope = api(client, alice, "v1/files", {"after": file_id + "\n"})
    assert envelope["error_code"] == "4015"
    assert len(stub.requests_seen()) == before


@pytest.mark.parametrize("imgid", ["1234567890123456\n", "١٢٣٤"])
def test_an_imgid_that_is_not_ascii_digits_alone_is_refused_by_its_pattern(client, alice, imgid):
    envelope = api(client, alice, "images/get", {"imgid": imgid})
    assert envelope["error_code"] == "4003"
    assert envelope["reason"] == (
        "Param error: _o_args.imgid: must be the imgid images/submit returned"
    )


def test_a_refused_file_call_writes_one_uncharged_usage_row(client, runner, alice, bob):
    file_id = upload(client, alice)
    api(client, bob, "v1/files/retrieve", {"file_id": file_id})
    result = runner.invoke(args=["usage", bob["key"], "--json"])
    report = json.loads(result.output)
    assert (report["calls"], report["charged"], report["by_code"]) == (1, 0, {"4003": 1})


def test_an_upload_that_cannot_be_recorded_is_4000_and_deleted_upstream(app, client, alice, stub):
    with app.extensions["gateway"].engine.begin() as connection:
        connection.execute(text("DROP TABLE file_owners"))  # the record fails after the upload
    envelope = api(
        client, alice, "v1/files", {"file": base64.b64encode(b"x").decode(), "purpose": "batch"}
    )
    assert (envelope["error_code"], envelope["response"]) == ("4000", [])
    assert (
        "the upload could not be recorded as this account's; upload it again"
        in (envelope["reason"])
    )
    (deleted,) = [entry for entry in stub.requests_seen() if entry["method"] == "DELETE"]
    assert (
        requests.get(stub.url + deleted["path"], headers=UPSTREAM_KEY, timeout=30).status_code
        == 404
    )


# ---- the OpenAI-compatible door


def v1_upload(client, account: dict, content: bytes = b"line one\n") -> str:
    response = client.post(
        "/v1/files",
        headers=bearer(account),
        data={"purpose": "assistants", "file": (io.BytesIO(content), "notes.txt")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["id"]


@pytest.mark.parametrize(
    ("verb", "path"),
    [("GET", "/v1/files/{}"), ("GET", "/v1/files/{}/content"), ("DELETE", "/v1/files/{}")],
)
def test_another_accounts_file_is_404_on_v1_and_reaches_no_upstream(
    client, alice, bob, stub, verb, path
):
    file_id = v1_upload(client, alice)
    before = len(stub.requests_seen())
    response = client.open(path.format(file_id), method=verb, headers=bearer(bob))
    assert response.status_code == 404
    assert response.headers["X-Error-Code"] == "4003"
    assert response.get_json() == {
        "error": {
            "message": f"Param error: _o_args.file_id: {file_id} is not a file of this "
            "account; v1/files lists this account's files",
            "type": "not_found_error",
            "param": None,
            "code": "4003",
        }
    }
    assert len(stub.requests_seen()) == before


def test_another_accounts_file_is_not_listed_on_v1(client, alice, bob):
    file_id = v1_upload(client, alice)
    own = v1_upload(client, bob, b"bob's")
    listing = client.get("/v1/files", headers=bearer(bob)).get_json()
    assert [entry["id"] for entry in listing["data"]] == [own]
    assert file_id not in json.dumps(listing)


def test_a_file_uploaded_on_v1_is_the_uploaders_on_api_too(client, alice, bob):
    file_id = v1_upload(client, alice)
    assert api(client, alice, "v1/files/retrieve", {"file_id": file_id})["error_code"] == "0000"
    assert api(client, bob, "v1/files/retrieve", {"file_id": file_id})["error_code"] == "4003"


def test_a_v1_file_id_with_a_trailing_newline_is_400_and_reaches_no_upstream(client, alice, stub):
    before = len(stub.requests_seen())
    response = client.get("/v1/files/file-abc%0A", headers=bearer(alice))
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "4003"
    assert len(stub.requests_seen()) == before


def test_the_sdk_raises_not_found_for_another_accounts_file(app, client, alice, bob):
    file_id = v1_upload(client, alice)
    sdk = openai.OpenAI(
        base_url="http://gateway.test/v1",
        api_key=f"{bob['key']}:{bob['secret']}",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.WSGITransport(app=app)),
    )
    with pytest.raises(openai.NotFoundError) as raised:
        sdk.files.retrieve(file_id)
    assert raised.value.code == "4003"
