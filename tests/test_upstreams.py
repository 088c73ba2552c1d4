"""Upstreams from UPSTREAMS_FILE: parsing, routing, the merged-list rule, validation, clients."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.upstreams import Upstream, UpstreamRouter
from stub_upstream import StubServer

REPO_ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-qwen-secret-value-0123456789"

QWEN = """
[[upstream]]
name = "qwen"
base_url = "https://dashscope.aliyuncs.com/compatible-mode/v1/"
api_key_env = "TEST_QWEN_KEY"
models = ["qwen-*", "qwen2.5-*"]
timeout_seconds = 20
max_retries = 2
headers = { "X-DashScope-SSE" = "disable", "X-Trace" = "gw" }
"""


@pytest.fixture(autouse=True)
def _environment(monkeypatch):
    monkeypatch.delenv("GUNICORN_TIMEOUT", raising=False)
    monkeypatch.setenv("TEST_QWEN_KEY", KEY)


def config(**overrides) -> dict:
    return {
        "OPENAI_BASE_URL": "https://api.openai.example/v1",
        "OPENAI_API_KEY": "sk-default",
        "UPSTREAM_TIMEOUT_SECONDS": 30.0,
        "UPSTREAM_MAX_RETRIES": 1,
        "UPSTREAMS_FILE": "",
        **overrides,
    }


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "upstreams.toml"
    path.write_text(text, encoding="utf-8")
    return path


def router_for(tmp_path, text: str, **overrides) -> UpstreamRouter:
    return UpstreamRouter.from_config(
        config(UPSTREAMS_FILE=str(write(tmp_path, text)), **overrides)
    )


def upstream_toml(name: str, models: list[str], base_url: str = "http://127.0.0.1:9/v1") -> str:
    quoted = ", ".join(f'"{m}"' for m in models)
    return (
        f'[[upstream]]\nname = "{name}"\nbase_url = "{base_url}"\n'
        f'api_key_env = "TEST_QWEN_KEY"\nmodels = [{quoted}]\n'
    )


# ---- parsing


def test_full_file_parses_every_field(tmp_path):
    router = router_for(tmp_path, QWEN)
    assert router.file_upstreams == (
        Upstream(
            name="qwen",
            base_url="https://dashscope.aliyuncs.com/compatible-mode/v1",
            api_key=KEY,
            timeout_seconds=20.0,
            max_retries=2,
            patterns=("qwen-*", "qwen2.5-*"),
            headers={"X-DashScope-SSE": "disable", "X-Trace": "gw"},
        ),
    )


def test_optional_fields_default_to_the_upstream_settings(tmp_path):
    router = router_for(
        tmp_path,
        upstream_toml("local", ["llama*"]),
        UPSTREAM_TIMEOUT_SECONDS=12.5,
        UPSTREAM_MAX_RETRIES=3,
    )
    (local,) = router.file_upstreams
    assert (local.timeout_seconds, local.max_retries, local.headers) == (12.5, 3, {})


def test_empty_setting_means_only_the_default_upstream():
    router = UpstreamRouter.from_config(config())
    assert router.upstreams() == [router.default]
    assert router.default == Upstream(
        name="default",
        base_url="https://api.openai.example/v1",
        api_key="sk-default",
        timeout_seconds=30.0,
        max_retries=1,
    )


def test_file_with_no_upstream_tables_adds_none(tmp_path):
    router = router_for(tmp_path, "# nothing yet\n")
    assert router.upstreams() == [router.default]


def test_shipped_example_file_parses(monkeypatch):
    for name in ("DASHSCOPE_API_KEY", "DEEPSEEK_API_KEY", "VLLM_API_KEY", "OLLAMA_API_KEY"):
        monkeypatch.setenv(name, "sk-" + name.lower())
    router = UpstreamRouter.from_config(
        config(UPSTREAMS_FILE=str(REPO_ROOT / "config" / "upstreams.example.toml"))
    )
    assert [(u.name, u.base_url) for u in router.file_upstreams] == [
        ("qwen", "https://dashscope.aliyuncs.com/compatible-mode/v1"),
        ("deepseek", "https://api.deepseek.com/v1"),
        ("vllm", "http://127.0.0.1:8002/v1"),
        ("ollama", "http://127.0.0.1:11434/v1"),
    ]


def test_repr_of_an_upstream_leaves_the_key_out(tmp_path):
    (qwen,) = router_for(tmp_path, QWEN).file_upstreams
    assert KEY not in repr(qwen)


# ---- routing


def test_route_first_matching_upstream_in_file_order_wins(tmp_path):
    router = router_for(
        tmp_path, upstream_toml("max", ["qwen-max*"]) + upstream_toml("qwen", ["qwen-*"])
    )
    assert router.route_model("qwen-max-latest").name == "max"
    assert router.route_model("qwen-turbo").name == "qwen"


def test_route_model_matching_no_pattern_goes_to_the_default(tmp_path):
    router = router_for(tmp_path, QWEN)
    assert router.route_model("gpt-4o-mini") is router.default


def test_route_none_model_goes_to_the_default(tmp_path):
    router = router_for(tmp_path, upstream_toml("all", ["*"]))
    assert router.route_model(None) is router.default


def test_route_patterns_are_case_sensitive(tmp_path):
    router = router_for(tmp_path, QWEN)
    assert router.route_model("Qwen-Max") is router.default


def test_upstreams_lists_the_default_first_then_file_order(tmp_path):
    router = router_for(tmp_path, upstream_toml("b", ["b*"]) + upstream_toml("a", ["a*"]))
    assert [u.name for u in router.upstreams()] == ["default", "b", "a"]


def test_stub_is_the_default_when_no_base_url_is_set(tmp_path):
    router = router_for(tmp_path, QWEN, OPENAI_BASE_URL="", OPENAI_API_KEY="")
    assert [u.name for u in router.upstreams()] == ["stub", "qwen"]


# ---- the merged model list


def test_lists_model_keeps_a_model_that_routes_back_to_its_lister(tmp_path):
    router = router_for(tmp_path, QWEN)
    qwen = router.file_upstreams[0]
    assert router.lists_model(qwen, "qwen-max") is True
    assert router.lists_model(router.default, "gpt-4o") is True


def test_lists_model_drops_a_default_model_claimed_by_a_file_pattern(tmp_path):
    router = router_for(tmp_path, QWEN)
    assert router.lists_model(router.default, "qwen-max") is False


def test_lists_model_drops_a_model_outside_the_listers_patterns(tmp_path):
    router = router_for(tmp_path, QWEN)
    qwen = router.file_upstreams[0]
    assert router.lists_model(qwen, "text-embedding-v3") is False


def test_lists_model_drops_a_model_an_earlier_upstream_claims(tmp_path):
    router = router_for(
        tmp_path, upstream_toml("first", ["qwen-max*"]) + upstream_toml("second", ["qwen-*"])
    )
    second = router.file_upstreams[1]
    assert router.lists_model(second, "qwen-max") is False
    assert router.lists_model(second, "qwen-plus") is True


# ---- validation: every mistake is a ValueError naming the file, the upstream and the fix


def load_error(tmp_path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as caught:
        UpstreamRouter.from_config(config(UPSTREAMS_FILE=str(path)))
    message = str(caught.value)
    assert KEY not in message
    return message.replace(str(path), "FILE")


def qwen_with(**changes) -> str:
    """QWEN with fields replaced (value: TOML text) or removed (value: None)."""
    fields = {
        "name": '"qwen"',
        "base_url": '"https://dashscope.aliyuncs.com/compatible-mode/v1"',
        "api_key_env": '"TEST_QWEN_KEY"',
        "models": '["qwen-*"]',
        **changes,
    }
    lines = [f"{k} = {v}" for k, v in fields.items() if v is not None]
    return "[[upstream]]\n" + "\n".join(lines) + "\n"


def test_unreadable_file_fails_naming_the_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ValueError) as caught:
        UpstreamRouter.from_config(config(UPSTREAMS_FILE=str(missing)))
    assert str(caught.value) == (
        f"UPSTREAMS_FILE {missing}: cannot be read (No such file or directory); "
        "fix the path or leave UPSTREAMS_FILE empty"
    )


def test_bad_toml_fails_naming_the_file_and_line(tmp_path):
    assert load_error(tmp_path, "[[upstream]]\nname = qwen\n") == (
        "UPSTREAMS_FILE FILE: is not valid TOML (Invalid value (at line 2, column 8))"
    )


def test_unknown_top_level_key_fails(tmp_path):
    assert load_error(tmp_path, "timeout = 3\n") == (
        "UPSTREAMS_FILE FILE: unknown top-level key 'timeout'; "
        "the file holds only [[upstream]] tables"
    )


def test_upstream_not_written_as_tables_fails(tmp_path):
    assert load_error(tmp_path, 'upstream = "qwen"\n') == (
        "UPSTREAMS_FILE FILE: 'upstream' must be written as [[upstream]] tables"
    )


INVALID_FIELDS = [
    (
        {"name": None},
        "UPSTREAMS_FILE FILE: [[upstream]] #1: name must be a string of a-z, 0-9, '_' and "
        "'-', e.g. name = \"qwen\"",
    ),
    (
        {"name": '"Qwen Max"'},
        "UPSTREAMS_FILE FILE: [[upstream]] #1: name must be a string of a-z, 0-9, '_' and "
        "'-', e.g. name = \"qwen\"",
    ),
    (
        {"name": '"default"'},
        "UPSTREAMS_FILE FILE: [[upstream]] #1: name 'default' is reserved for the "
        "OPENAI_BASE_URL upstream; pick another",
    ),
    (
        {"name": '"stub"'},
        "UPSTREAMS_FILE FILE: [[upstream]] #1: name 'stub' is reserved for the "
        "OPENAI_BASE_URL upstream; pick another",
    ),
    (
        {"base_url": None},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': the required field 'base_url' is missing",
    ),
    (
        {"models": None},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': the required field 'models' is missing",
    ),
    (
        {"api_key_env": None},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': the required field 'api_key_env' is missing",
    ),
    (
        {"timeout": "10"},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': unknown field 'timeout'; known "
        "fields: name, base_url, api_key_env, api_key_envs, models, weight, priority, "
        "timeout_seconds, max_retries, headers, responses",
    ),
    (
        {"api_key": '"sk-in-the-file"'},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': unknown field 'api_key'; keys are "
        "never read from the file: put the key in an environment variable and name that "
        "variable in api_key_env",
    ),
    (
        {"base_url": "42"},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': base_url must be a string like "
        '"https://host/v1"',
    ),
    (
        {"base_url": '"ftp://files.example/v1"'},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': base_url 'ftp://files.example/v1' "
        'must be an http:// or https:// URL with a host, e.g. "https://api.deepseek.com/v1"',
    ),
    (
        {"base_url": '"dashscope.aliyuncs.com/compatible-mode/v1"'},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': base_url "
        "'dashscope.aliyuncs.com/compatible-mode/v1' must be an http:// or https:// URL "
        'with a host, e.g. "https://api.deepseek.com/v1"',
    ),
    (
        {"base_url": '"https:///v1"'},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': base_url 'https:///v1' must be an "
        'http:// or https:// URL with a host, e.g. "https://api.deepseek.com/v1"',
    ),
    (
        {"base_url": '"https://user:hunter2@host.example/v1"'},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': base_url must not carry credentials "
        "(user@host); put the key in an environment variable and name it in api_key_env",
    ),
    (
        {"base_url": '"https://host.example/v1?key=1"'},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': base_url "
        "'https://host.example/v1?key=1' must not have a query or a fragment",
    ),
    (
        {"base_url": '"http://host.example:99999/v1"'},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': base_url "
        "'http://host.example:99999/v1' has an invalid port",
    ),
    (
        {"api_key_env": '""'},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': api_key_env must be the name of an "
        'environment variable, e.g. api_key_env = "DASHSCOPE_API_KEY"',
    ),
    (
        {"models": "[]"},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': models must be a non-empty list of "
        'model-name patterns, e.g. models = ["qwen-*"]',
    ),
    (
        {"models": '"qwen-*"'},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': models must be a non-empty list of "
        'model-name patterns, e.g. models = ["qwen-*"]',
    ),
    (
        {"timeout_seconds": '"30"'},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': timeout_seconds must be a number of "
        "seconds above 0",
    ),
    (
        {"timeout_seconds": "0"},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': timeout_seconds must be a number of "
        "seconds above 0",
    ),
    (
        {"max_retries": "-1"},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': max_retries must be a whole number, "
        "0 or more",
    ),
    (
        {"max_retries": "true"},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': max_retries must be a whole number, "
        "0 or more",
    ),
    (
        {"headers": '"X-A: b"'},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': headers must be a table of strings, "
        'e.g. headers = { "X-A" = "b" }',
    ),
    (
        {"headers": '{ "X-Retries" = 3 }'},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': headers: the value of 'X-Retries' "
        "must be a one-line string",
    ),
    (
        {"headers": '{ "X-A" = "one\\ntwo" }'},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': headers: the value of 'X-A' must be "
        "a one-line string",
    ),
    (
        {"headers": '{ "X A" = "b" }'},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': headers: 'X A' is not a valid header name",
    ),
    (
        {"headers": '{ "authorization" = "Bearer sk-other" }'},
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': headers may not set Authorization; "
        "the key comes from api_key_env",
    ),
]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(changes, expected, id="-".join(f"{k}={v}" for k, v in changes.items()))
        for changes, expected in INVALID_FIELDS
    ],
)
def test_invalid_field_fails_naming_file_upstream_and_fix(tmp_path, changes, expected):
    assert load_error(tmp_path, qwen_with(**changes)) == expected


def test_header_values_are_never_echoed_in_errors(tmp_path):
    message = load_error(tmp_path, qwen_with(headers='{ "X-Token" = "tok-123\\r\\nX: y" }'))
    assert "tok-123" not in message


def test_later_upstream_is_named_by_its_position(tmp_path):
    text = upstream_toml("ok", ["a*"]) + qwen_with(max_retries='"1"')
    assert load_error(tmp_path, text) == (
        "UPSTREAMS_FILE FILE: [[upstream]] #2 'qwen': max_retries must be a whole number, 0 or more"
    )


def test_duplicate_name_fails_naming_both_positions(tmp_path):
    text = upstream_toml("qwen", ["a*"]) + upstream_toml("qwen", ["b*"])
    assert load_error(tmp_path, text) == (
        "UPSTREAMS_FILE FILE: [[upstream]] #2 name 'qwen' is already used by [[upstream]] #1; "
        "give each upstream its own name"
    )


def test_unset_key_variable_fails_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_QWEN_KEY")
    assert load_error(tmp_path, QWEN) == (
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': the environment variable TEST_QWEN_KEY "
        "named by api_key_env is unset or empty; export the upstream's key in it (any "
        "non-empty value for a local server that checks none)"
    )


def test_empty_key_variable_fails_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_QWEN_KEY", "  ")
    assert "the environment variable TEST_QWEN_KEY named by api_key_env is unset or empty" in (
        load_error(tmp_path, QWEN)
    )


def test_timeout_times_attempts_at_the_gunicorn_timeout_fails(tmp_path):
    # 45 s x 2 attempts = 90 s, the default GUNICORN_TIMEOUT_SECONDS: not below it.
    assert load_error(tmp_path, qwen_with(timeout_seconds="45", max_retries="1")) == (
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': timeout_seconds x attempts = 45s x 2 = "
        "90s must stay below the gunicorn timeout (90s); lower timeout_seconds or "
        "max_retries, or raise GUNICORN_TIMEOUT"
    )


def test_timeout_just_below_the_gunicorn_timeout_loads(tmp_path):
    router = router_for(tmp_path, qwen_with(timeout_seconds="44.5", max_retries="1"))
    assert router.file_upstreams[0].timeout_seconds == 44.5


def test_gunicorn_timeout_env_var_is_the_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("GUNICORN_TIMEOUT", "20")
    assert load_error(tmp_path, qwen_with(timeout_seconds="10", max_retries="1")) == (
        "UPSTREAMS_FILE FILE: [[upstream]] #1 'qwen': timeout_seconds x attempts = 10s x 2 = "
        "20s must stay below the gunicorn timeout (20s); lower timeout_seconds or "
        "max_retries, or raise GUNICORN_TIMEOUT"
    )


def test_inherited_timeout_is_checked_too(tmp_path):
    path = write(tmp_path, qwen_with())
    with pytest.raises(ValueError, match=r"= 100s must stay below the gunicorn timeout \(90s\)"):
        UpstreamRouter.from_config(config(UPSTREAMS_FILE=str(path), UPSTREAM_TIMEOUT_SECONDS=50.0))


def test_create_app_fails_to_start_on_a_bad_file(tmp_path, make_app, monkeypatch):
    monkeypatch.delenv("TEST_QWEN_KEY")
    path = write(tmp_path, QWEN)
    with pytest.raises(ValueError, match="the environment variable TEST_QWEN_KEY"):
        make_app(UPSTREAMS_FILE=str(path))


def test_create_app_routes_by_the_file_it_names(tmp_path, make_app):
    app = make_app(UPSTREAMS_FILE=str(write(tmp_path, QWEN)))
    router = app.extensions["gateway"].dispatcher.router
    assert [u.name for u in router.upstreams()] == ["default", "qwen"]


# ---- clients, against the real stub over HTTP


def test_extra_headers_reach_the_upstream(tmp_path):
    with StubServer() as stub:
        router = router_for(
            tmp_path,
            upstream_toml("s", ["*"], stub.base_url)
            + ('headers = { "X-DashScope-SSE" = "disable", "X-Trace" = "gw" }\n'),
        )
        router.client_for(router.file_upstreams[0]).models.list()
        (seen,) = stub.requests_seen("/v1/models")
    assert (seen["headers"]["x-dashscope-sse"], seen["headers"]["x-trace"]) == ("disable", "gw")


def test_default_upstream_sends_no_file_headers(tmp_path):
    with StubServer() as stub:
        router = router_for(
            tmp_path,
            upstream_toml("s", ["qwen-*"]) + 'headers = { "X-Trace" = "gw" }\n',
            OPENAI_BASE_URL=stub.base_url,
        )
        router.client_for(router.route_model("gpt-4o")).models.list()
        (seen,) = stub.requests_seen("/v1/models")
    assert "x-trace" not in seen["headers"]


def test_key_from_the_env_var_reaches_the_upstream_as_bearer(tmp_path):
    with StubServer() as stub:
        router = router_for(tmp_path, upstream_toml("s", ["*"], stub.base_url))
        router.client_for(router.route_model("qwen-max")).models.list()
        (seen,) = stub.requests_seen("/v1/models")
    assert seen["headers"]["authorization"] == f"Bearer {KEY}"


def test_client_for_builds_one_client_per_upstream(tmp_path):
    router = router_for(tmp_path, upstream_toml("a", ["a*"]) + upstream_toml("b", ["b*"]))
    a, b = router.file_upstreams
    assert router.client_for(a) is router.client_for(a)
    assert router.client_for(a) is not router.client_for(b)


def test_client_for_applies_the_upstreams_settings(tmp_path):
    router = router_for(tmp_path, QWEN)
    client = router.client_for(router.file_upstreams[0])
    assert (str(client.base_url), client.api_key, client.timeout, client.max_retries) == (
        "https://dashscope.aliyuncs.com/compatible-mode/v1/",
        KEY,
        20.0,
        2,
    )


def test_warm_up_builds_every_upstreams_client(tmp_path):
    router = router_for(tmp_path, upstream_toml("a", ["a*"]) + upstream_toml("b", ["b*"]))
    router.warm_up()
    assert sorted(router._clients) == ["a", "b", "default"]
