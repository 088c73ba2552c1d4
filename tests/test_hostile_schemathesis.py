"""Hostile input, part 1: schemathesis generates requests for every operation of the app's own
/openapi.json (so /v1 operations are covered as soon as the document lists them), cases valid
and invalid for the document, sent in process through the factory's app to the real stub.

Most cases carry a valid key and secret (query key/secret on /api, `Authorization: Bearer
KEY:SECRET` on /v1) so that they get past authentication, and most /api cases are steered past
the checks that come first (a catalog method, a known lang) so that they reach `_o_args`.
Every answer: no HTTP 5xx, the document's content types and schemas; on /api the envelope with
a `last_id` and no 4000/5000; an unknown method sends nothing upstream.

schemathesis' own pytest loader (`schemathesis.pytest.from_fixture`) fails under pytest 9.2
(it sets the removed `Node._nodeid`), so each operation's strategy runs under a plain
hypothesis `@given`, seeded by the operation's name: CI runs the same cases every time."""

from __future__ import annotations

import zlib

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from requests.structures import CaseInsensitiveDict
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks

from proxy.catalog import METHODS, PLATFORMS, find_method
from proxy.params import normalise_lang
from tests.conftest import create_account
from tests.hostile import assert_api_answer, assert_v1_answer

# Cases per operation (valid and invalid for the document): 24 operations took 46 s on a
# loaded 2-core machine.
CASES_PER_OPERATION = 100
# Catalog methods the fuzzer's method values are turned into. Not images/submit: its job runs
# in a background thread and would call the stub while a later case counts the stub's requests.
FUZZED_METHODS = tuple(spec.name for spec in METHODS if spec.name != "images/submit")
# schemathesis' checks by their documented names: no 5xx, and the answers the document declares
# (its content types, its schemas). Not status_code_conformance nor negative_data_rejection:
# /api answers every call HTTP 200 with the code in the envelope, by contract.
CHECK_NAMES = ("not_a_server_error", "content_type_conformance", "response_schema_conformance")
FUZZ_SETTINGS = settings(
    max_examples=CASES_PER_OPERATION,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def fuzz_app(make_app):
    return make_app()


@pytest.fixture
def fuzz_account(fuzz_app):
    return create_account(fuzz_app.test_cli_runner(), "fuzz")


def test_no_operation_answers_hostile_input_with_a_server_fault(fuzz_app, fuzz_account, stub):
    """Every operation of /openapi.json; the failures of all operations are gathered, each
    with its smallest failing case (a curl line) and the answer."""
    document = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)
    load_all_checks()
    checks = CHECKS.get_by_names(CHECK_NAMES)
    cases_run: dict[str, int] = {}
    failures = []
    for loaded in document.get_all_operations():
        operation = loaded.ok()
        cases_run[operation.label] = 0
        try:
            fuzz(operation, fuzz_account, stub, checks, cases_run)
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a FailureGroup
            notes = "\n".join(getattr(exc, "__notes__", []))
            failures.append(f"{operation.label}: {exc}\n{notes}")
    print(f"\nschemathesis cases run per operation: {cases_run}")
    assert not failures, "\n\n".join(failures)


def fuzz(operation, account: dict, stub, checks: list, cases_run: dict) -> None:
    cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
        GenerationMode.NEGATIVE
    )

    @seed(zlib.crc32(operation.label.encode()))
    @FUZZ_SETTINGS
    @given(case=cases)
    def answers_without_a_fault(case):
        cases_run[operation.label] += 1
        check_case(case, account, stub, checks)

    answers_without_a_fault()


def check_case(case, account: dict, stub, checks: list) -> None:
    is_api_call = case.path == "/api" or case.path.endswith("/custom")
    if is_api_call:
        steer_past_first_checks(case)
    if is_api_call or case.path.startswith("/v1"):
        with_credentials(case, account)
    without_fault_models(case)
    stub.reset()
    response = case.call()
    sent = case.as_curl_command()
    case.validate_response(response, checks=checks)
    answer = WerkzeugLike(response)
    if is_api_call:
        assert_api_answer(sent, answer)
        if not method_reaches_upstream(case):
            assert stub.requests_seen() == [], f"an unknown method reached the upstream: {sent}"
    elif case.path.startswith("/v1"):
        assert_v1_answer(sent, answer)


def chosen(value, out_of: int) -> int:
    """A stable pick from a generated value: the same case makes the same choice on every run
    and while hypothesis shrinks it."""
    return zlib.crc32(repr(value).encode("utf-8", "surrogatepass")) % out_of


def first_value(value) -> str:
    """A query value as the gateway reads it: the first non-empty one when repeated."""
    values = value if isinstance(value, list) else [value]
    return next((str(v) for v in values if v not in ("", None)), "")


def with_credentials(case, account: dict) -> None:
    """Three cases in four carry the account's key and secret; the rest keep what was
    generated (hostile or absent credentials)."""
    if chosen((case.query, case.headers), 4) == 0:
        return
    if case.path.startswith("/v1"):
        case.headers = {
            **(case.headers or {}),
            "Authorization": f"Bearer {account['key']}:{account['secret']}",
        }
    else:
        case.query = {**(case.query or {}), "key": account["key"], "secret": account["secret"]}


def without_fault_models(case) -> None:
    """A /v1 body naming one of the stub's fault models (`stub-garbage`, `stub-500`, ...) asks
    the upstream to fail on purpose, and the gateway's 502 is then the right answer, not a
    fault of its own: such a model becomes the default one. Hypothesis draws string constants
    from the project's source, so it does find those names."""
    body = case.body
    if isinstance(body, dict) and str(body.get("model", "")).startswith("stub-"):
        case.body = {**body, "model": "gpt-4o-mini"}


def steer_past_first_checks(case) -> None:
    """Two /api cases in three name a catalog method (picked by the generated value) on the
    openai platform, in a known lang, without a callback or version the gateway refuses first;
    the third keeps every generated value."""
    query = dict(case.query or {})
    pick = chosen((query, case.path_parameters), 3 * len(FUZZED_METHODS))
    if pick % 3 == 0:
        return
    query["method"] = FUZZED_METHODS[pick // 3]
    if normalise_lang(first_value(query.get("lang")) or "cn") is None:
        query["lang"] = ("cn", "en", "ru", "zh-CN")[pick % 4]
    query.pop("callback", None)
    query.pop("version", None)
    case.query = query
    if case.path_parameters:
        case.path_parameters = {**case.path_parameters, "platform": "openai"}


def method_reaches_upstream(case) -> bool:
    """Whether the gateway may call the upstream for this case: only a catalog method does."""
    query = case.query or {}
    name = (first_value(query.get("method")) or first_value(query.get("api_name"))).strip()
    platform = (case.path_parameters or {}).get("platform")
    return find_method(name) is not None and (platform is None or platform in PLATFORMS)


class WerkzeugLike:
    """A schemathesis Response seen through the few attributes tests/hostile.py reads."""

    def __init__(self, response):
        self._response = response
        self.status_code = response.status_code
        self.headers = CaseInsensitiveDict(
            {name: values[0] for name, values in response.headers.items()}
        )
        self.content_type = self.headers.get("Content-Type", "")
        self.mimetype = self.content_type.split(";")[0].strip().lower()

    def get_data(self, as_text: bool = False):
        return self._response.content.decode("utf-8") if as_text else self._response.content
