"""Every catalog method through GET /api (and multipart POST for files), against the bundled
stub over real HTTP: what a legacy client sends, what it gets back."""

from __future__ import annotations

import base64
import io
import json
import time

import pytest

from tests.conftest import TINY_PNG_B64, create_account

TINY_PNG = base64.b64decode(TINY_PNG_B64)


def upstream_bodies(stub, path: str) -> list:
    return [entry for entry in stub.requests_seen() if entry["path"] == path]


def test_edits_are_answered_by_a_chat_call_in_the_classic_edits_shape(call, stub):
    envelope = call("v1/edits", {"input": "teh cat", "instruction": "fix the spelling"})
    assert envelope["error_code"] == "0000", envelope
    response = envelope["response"]
    assert response["object"] == "edit"
    assert [choice["index"] for choice in response["choices"]] == [0]
    assert response["choices"][0]["text"]
    assert set(response["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    sent = upstream_bodies(stub, "/v1/chat/completions")[-1]["body"]
    assert sent["model"] == "gpt-4o-mini"
    assert "fix the spelling" in sent["messages"][1]["content"]
    assert "teh cat" in sent["messages"][1]["content"]
    assert upstream_bodies(stub, "/v1/edits") == []


def test_edits_without_an_instruction_name_the_field(call):
    envelope = call("v1/edits", {"input": "teh cat"})
    assert envelope["error_code"] == "4003"
    assert "_o_args.instruction" in envelope["reason"]


def test_image_generation_uses_the_default_image_model(call, stub):
    envelope = call("v1/images/generations", {"prompt": "向日葵"})
    assert envelope["error_code"] == "0000", envelope
    assert len(envelope["response"]["data"]) == 1
    assert upstream_bodies(stub, "/v1/images/generations")[-1]["body"]["model"] == "dall-e-3"


def test_image_generation_returns_n_images(call):
    envelope = call("v1/images/generations", {"prompt": "向日葵", "n": 2, "model": "dall-e-2"})
    assert envelope["error_code"] == "0000", envelope
    assert len(envelope["response"]["data"]) == 2


def test_image_generation_with_no_images_is_2000(call):
    envelope = call("v1/images/generations", {"prompt": "nothing", "model": "stub-empty"})
    assert envelope["error_code"] == "2000"
    assert envelope["response"]["data"] == []


def test_image_edit_takes_a_base64_image_from_a_get_query(call, stub):
    envelope = call("v1/images/edits", {"image": TINY_PNG_B64, "prompt": "add a hat"})
    assert envelope["error_code"] == "0000", envelope
    assert len(envelope["response"]["data"]) == 1
    seen = upstream_bodies(stub, "/v1/images/edits")[-1]
    assert json.dumps(seen).count(str(len(TINY_PNG))) >= 1  # the part's size, not its bytes


def test_image_edit_takes_a_multipart_image_part(client, account, stub):
    response = client.post(
        "/api",
        data={
            "key": account["key"],
            "secret": account["secret"],
            "method": "v1/images/edits",
            "_o_args": json.dumps({"prompt": "add a hat"}),
            "image": (io.BytesIO(TINY_PNG), "cat.png", "image/png"),
        },
        content_type="multipart/form-data",
    )
    envelope = response.get_json()
    assert envelope["error_code"] == "0000", envelope
    assert "cat.png" in json.dumps(upstream_bodies(stub, "/v1/images/edits")[-1])


def test_a_file_sent_both_ways_is_4003(client, account):
    response = client.post(
        "/api",
        data={
            "key": account["key"],
            "secret": account["secret"],
            "method": "v1/images/variations",
            "_o_args": json.dumps({"image": TINY_PNG_B64}),
            "image": (io.BytesIO(TINY_PNG), "cat.png", "image/png"),
        },
        content_type="multipart/form-data",
    )
    envelope = response.get_json()
    assert envelope["error_code"] == "4003"
    assert "image is sent twice" in envelope["reason"]


def test_image_variation_of_a_data_url_image(call):
    envelope = call("v1/images/variations", {"image": "data:image/png;base64," + TINY_PNG_B64})
    assert envelope["error_code"] == "0000", envelope
    assert len(envelope["response"]["data"]) == 1


def test_an_image_url_is_refused_and_never_fetched(call, stub):
    before = len(stub.requests_seen())
    envelope = call("v1/images/variations", {"image": f"{stub.url}/_stub/images/x.png"})
    assert envelope["error_code"] == "4003"
    assert "_o_args.image: URLs are not fetched" in envelope["reason"]
    assert len(stub.requests_seen()) == before


def test_invalid_base64_names_the_field(call):
    envelope = call("v1/images/variations", {"image": "not base64!"})
    assert envelope["error_code"] == "4003"
    assert "_o_args.image: is not valid base64" in envelope["reason"]


def test_a_file_over_max_upload_bytes_is_4003_and_reaches_no_upstream(make_app, stub):
    app = make_app(MAX_UPLOAD_BYTES=64)
    account = create_account(app.test_cli_runner())
    before = len(stub.requests_seen())
    envelope = (
        app.test_client()
        .get(
            "/api",
            query_string={
                "key": account["key"],
                "secret": account["secret"],
                "method": "v1/audio/transcriptions",
                "_o_args": json.dumps({"file": base64.b64encode(b"x" * 65).decode()}),
            },
        )
        .get_json()
    )
    assert envelope["error_code"] == "4003"
    assert envelope["reason"].endswith(
        ": _o_args.file: the file is 65 bytes; at most 64 are accepted (MAX_UPLOAD_BYTES)"
    )
    assert len(stub.requests_seen()) == before


def test_transcription_of_a_base64_file_with_its_filename(call, stub):
    audio = base64.b64encode("你好 world".encode()).decode()
    envelope = call("v1/audio/transcriptions", {"file": audio, "filename": "hello.mp3"})
    assert envelope["error_code"] == "0000", envelope
    assert envelope["response"] == {
        "text": "你好 world",
        "usage": {"type": "duration", "seconds": 1},
    }
    seen = json.dumps(upstream_bodies(stub, "/v1/audio/transcriptions")[-1], ensure_ascii=False)
    assert "hello.mp3" in seen and "whisper-1" in seen


def test_transcription_as_plain_text_is_wrapped_in_a_text_field(call):
    audio = base64.b64encode(b"plain words").decode()
    envelope = call("v1/audio/transcriptions", {"file": audio, "response_format": "text"})
    assert envelope["error_code"] == "0000", envelope
    assert envelope["response"]["text"].strip() == "plain words"


def test_translation_answers_english_text(call):
    audio = base64.b64encode(b"bonjour").decode()
    envelope = call("v1/audio/translations", {"file": audio, "filename": "fr.mp3"})
    assert envelope["error_code"] == "0000", envelope
    assert envelope["response"]["text"] == "[en] bonjour"


def test_speech_returns_base64_audio_with_its_mime_type(call):
    envelope = call("v1/audio/speech", {"input": "hello", "voice": "alloy"})
    assert envelope["error_code"] == "0000", envelope
    response = envelope["response"]
    audio = base64.b64decode(response["audio"])
    assert (response["mime_type"], response["format"], response["bytes"]) == (
        "audio/mpeg",
        "mp3",
        len(audio),
    )
    assert audio.startswith(b"ID3")


def test_speech_as_wav_is_a_riff_file(call):
    envelope = call(
        "v1/audio/speech", {"input": "hello", "voice": "alloy", "response_format": "wav"}
    )
    assert envelope["response"]["mime_type"] == "audio/wav"
    assert base64.b64decode(envelope["response"]["audio"])[:4] == b"RIFF"


def upload(call, name: str, content: bytes) -> dict:
    envelope = call(
        "v1/files",
        {
            "file": base64.b64encode(content).decode(),
            "filename": name,
            "purpose": "assistants",
        },
    )
    assert envelope["error_code"] == "0000", envelope
    return envelope["response"]


def test_file_upload_then_retrieve_content_and_delete(call):
    uploaded = upload(call, "notes.txt", b"line one\n")
    assert (uploaded["filename"], uploaded["bytes"], uploaded["purpose"]) == (
        "notes.txt",
        9,
        "assistants",
    )
    retrieved = call("v1/files/retrieve", {"file_id": uploaded["id"]})["response"]
    assert retrieved["id"] == uploaded["id"]
    content = call("v1/files/content", {"file_id": uploaded["id"]})["response"]
    assert base64.b64decode(content["content"]) == b"line one\n"
    assert content["bytes"] == 9
    deleted = call("v1/files/delete", {"file_id": uploaded["id"]})
    assert deleted["error_code"] == "0000"
    assert deleted["response"]["deleted"] is True
    gone = call("v1/files/retrieve", {"file_id": uploaded["id"]})
    assert gone["error_code"] == "4003"
    assert f"{uploaded['id']} is not a file of this account" in gone["reason"]


def test_file_upload_without_purpose_is_4003(call):
    envelope = call("v1/files", {"file": base64.b64encode(b"x").decode()})
    assert envelope["error_code"] == "4003"
    assert "_o_args.purpose is required" in envelope["reason"]


def test_file_list_pages_with_limit_and_after(call, stub):
    first, second, third = (upload(call, f"{n}.txt", n.encode()) for n in ("a", "b", "c"))
    page = call("v1/files", {"limit": 2, "order": "asc"}, cache="no")["response"]
    ids = [entry["id"] for entry in page["data"]]
    assert page["has_more"] is True
    assert ids[-1] == page["last_id"]
    rest = call("v1/files", {"limit": 2, "order": "asc", "after": page["last_id"]})["response"]
    listed = ids + [entry["id"] for entry in rest["data"]]
    assert [first["id"], second["id"], third["id"]] == [
        i for i in listed if i in {first["id"], second["id"], third["id"]}
    ]


def test_file_list_with_a_malformed_cursor_is_4015(call, stub):
    before = len(stub.requests_seen())
    envelope = call("v1/files", {"after": "page-2"})
    assert envelope["error_code"] == "4015"
    assert "_o_args.after='page-2' is not a file id of this list" in envelope["reason"]
    assert len(stub.requests_seen()) == before


def test_file_list_with_an_unknown_cursor_is_4015(call):
    envelope = call("v1/files", {"after": "file-000000000000000000000000"})
    assert envelope["error_code"] == "4015"


def test_file_methods_refuse_unknown_arguments(call):
    envelope = call("v1/files/retrieve", {"file_id": "file-abc", "purpose": "x"})
    assert envelope["error_code"] == "4003"
    assert "_o_args.purpose" in envelope["reason"]


def test_a_base64_file_is_not_echoed_back_whole_in_call_args(call):
    big = base64.b64encode(b"y" * 6000).decode()
    envelope = call("v1/audio/transcriptions", {"file": big})
    echoed = envelope["call_args"]["_o_args"]
    assert echoed.endswith(f"... ({len(json.dumps({'file': big}))} characters)")
    assert len(echoed) < 4200


def poll_job(call, imgid: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        envelope = call("images/get", {"imgid": imgid})
        if envelope["response"].get("status") not in ("pending", "running"):
            return envelope
        assert time.monotonic() < deadline, envelope
        time.sleep(0.1)


def test_image_job_is_submitted_at_once_and_done_later(call):
    submitted = call("images/submit", {"prompt": "向日葵"})
    assert submitted["error_code"] == "0000", submitted
    imgid = submitted["response"]["imgid"]
    assert len(imgid) == 16 and imgid.isdigit()
    done = poll_job(call, imgid)
    assert done["error_code"] == "0000", done
    job = done["response"]
    assert (job["imgid"], job["status"], job["progress"], job["prompt"], job["model"]) == (
        imgid,
        "done",
        100,
        "向日葵",
        "dall-e-3",
    )
    assert len(job["data"]) == 1


def test_a_pending_image_job_says_so_without_error(call):
    submitted = call("images/submit", {"prompt": "slow", "model": "stub-slow"})
    envelope = call("images/get", {"imgid": submitted["response"]["imgid"]})
    assert envelope["error_code"] == "0000"
    assert envelope["response"]["status"] in ("pending", "running")
    assert "data" not in envelope["response"]
    poll_job(call, submitted["response"]["imgid"])  # let it end before the app goes


def test_a_failed_image_job_answers_its_code_and_reason(call):
    submitted = call("images/submit", {"prompt": "x", "model": "stub-500"})
    failed = poll_job(call, submitted["response"]["imgid"])
    assert failed["error_code"] == "4002"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["code"] == "4002"


def test_image_job_submission_is_charged_once_and_get_is_free(call):
    imgid = call("images/submit", {"prompt": "向日葵"})["response"]["imgid"]
    poll_job(call, imgid)
    envelope = call("images/get", {"imgid": imgid})
    assert envelope["api_info"].startswith("today:1 ")


def test_an_unknown_imgid_is_4003(call):
    envelope = call("images/get", {"imgid": "1234567890123456"})
    assert envelope["error_code"] == "4003"
    assert "there is no image job '1234567890123456' for this key" in envelope["reason"]


def test_another_accounts_image_job_is_not_found(call, runner, client):
    imgid = call("images/submit", {"prompt": "mine"})["response"]["imgid"]
    poll_job(call, imgid)
    other = create_account(runner, "other")
    envelope = client.get(
        "/api",
        query_string={
            "key": other["key"],
            "secret": other["secret"],
            "method": "images/get",
            "_o_args": json.dumps({"imgid": imgid}),
        },
    ).get_json()
    assert envelope["error_code"] == "4003"


@pytest.mark.parametrize(
    "method",
    [
        "v1/edits",
        "v1/images/generations",
        "v1/images/edits",
        "v1/images/variations",
        "v1/audio/transcriptions",
        "v1/audio/translations",
        "v1/audio/speech",
        "v1/files",
        "v1/files/retrieve",
        "v1/files/delete",
        "v1/files/content",
        "images/submit",
        "images/get",
    ],
)
def test_every_new_method_is_in_the_method_catalog_with_its_schema(client, method):
    entries = {entry["method"]: entry for entry in client.get("/api/methods").get_json()["methods"]}
    assert method in entries
    assert entries[method]["o_args_schema"]


def test_models_list_names_an_unreachable_upstream_and_is_not_cached(
    make_app, tmp_path, monkeypatch
):
    monkeypatch.setenv("DEAD_KEY", "sk-dead")
    upstreams = tmp_path / "upstreams.toml"
    upstreams.write_text(
        '[[upstream]]\nname = "dead"\nbase_url = "http://127.0.0.1:9/v1"\n'
        'api_key_env = "DEAD_KEY"\nmodels = ["dead-*"]\n'
    )
    app = make_app(UPSTREAMS_FILE=str(upstreams))
    account = create_account(app.test_cli_runner())
    query = {"key": account["key"], "secret": account["secret"], "method": "v1/models"}
    client = app.test_client()
    first = client.get("/api", query_string={**query, "cache": "yes"}).get_json()
    assert first["error_code"] == "0000", first
    assert first["response"]["unavailable_upstreams"] == ["dead"]
    assert "gpt-4o-mini" in [model["id"] for model in first["response"]["data"]]
    again = client.get("/api", query_string={**query, "cache": "yes"}).get_json()
    assert again["cache"] == 0


def test_a_tool_call_comes_back_in_the_envelope_of_a_get_call(call):
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    envelope = call(
        "v1/chat/completions",
        {
            "messages": [{"role": "user", "content": "Paris"}],
            "tools": [tool],
            "tool_choice": "required",
        },
    )
    assert envelope["error_code"] == "0000", envelope
    choice = envelope["response"]["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
