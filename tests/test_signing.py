"""Signed requests (proxy/signing.py, docs/signing.md); real PHP judges the client recipe."""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from pathlib import Path

import pytest

from proxy.errors import AUTH_FAILED, GatewayError
from proxy.signing import (
    SIGN_EXCLUDED_PARAMS,
    compute_sign,
    parse_dateline,
    sign_matches,
    signing_string,
)
from tests.php_judge import run_php

DOC = Path(__file__).resolve().parent.parent / "docs" / "signing.md"

# The PHP client recipe of docs/signing.md, verbatim (a test checks the two stay identical).
PHP_SIGN_FUNCTION = r"""
function onebound_sign(string $secret, array $params): string
{
    unset($params['sign'], $params['secret']);
    ksort($params, SORT_STRING);
    $text = '';
    foreach ($params as $name => $value) {
        $text .= $name . (is_string($value) ? $value : json_encode($value,
            JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_LINE_TERMINATORS
            | JSON_THROW_ON_ERROR));
    }
    return strtoupper(md5($secret . $text . $secret));
}
""".strip()

SECRET = "s3cr3t"
O_ARGS = {"messages": [{"role": "user", "content": "你好，世界"}]}
PARAMS = {
    "key": "abc",
    "method": "v1/chat/completions",
    "_o_args": O_ARGS,
    "dateline": "1700000000",
}
O_ARGS_TEXT = '{"messages":[{"role":"user","content":"你好，世界"}]}'
PARAMS_TEXT = f"_o_args{O_ARGS_TEXT}dateline1700000000keyabcmethodv1/chat/completions"
NOW = 1_700_000_000.0


def md5_upper(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest().upper()


def php_output(script: str) -> str:
    done = run_php(script)
    assert done.returncode == 0 and not done.stderr, done.stderr.decode()
    return done.stdout.decode("utf-8")


# --- the rule -----------------------------------------------------------------------------------


def test_signing_string_is_sorted_names_each_followed_by_its_value():
    assert signing_string(PARAMS) == PARAMS_TEXT


def test_known_answer_sign_is_md5_of_secret_text_secret_in_upper_case_hex():
    expected = md5_upper("s3cr3t" + PARAMS_TEXT + "s3cr3t")
    assert expected == "449BB96158842E25915F1838F9730423"
    assert compute_sign(SECRET, PARAMS) == expected


def test_sign_and_secret_are_the_excluded_params():
    assert SIGN_EXCLUDED_PARAMS == frozenset({"sign", "secret"})


def test_sign_and_secret_params_are_left_out_of_the_signing_string():
    sent = {**PARAMS, "sign": "ABC", "secret": SECRET}
    assert signing_string(sent) == PARAMS_TEXT
    assert compute_sign(SECRET, sent) == compute_sign(SECRET, PARAMS)


def test_every_other_param_is_covered_including_unknown_ones():
    sent = {"result_type": "jsonu", "cache": "no", "lang": "en", "version": "v1", "nonce": "n1"}
    assert signing_string(sent) == "cachenolangennoncen1result_typejsonuversionv1"


def test_names_sort_by_utf8_bytes_uppercase_and_underscore_before_lowercase():
    sent = {"dateline": "1", "b": "2", "_o_args": "3", "a": "4", "Z": "5", "é": "6"}
    assert signing_string(sent) == "Z5_o_args3a4b2dateline1é6"


def test_names_sort_by_utf8_bytes_not_utf16_units():
    # U+FF5A (EF BD 9A) comes before U+1F600 (F0 9F 98 80); in UTF-16 the emoji's D83D is first.
    assert signing_string({"😀": "1", "ｚ": "2"}) == "ｚ2😀1"


def test_a_name_that_prefixes_another_sorts_first():
    assert signing_string({"ab": "2", "a": "1"}) == "a1ab2"


def test_string_values_are_written_as_sent_without_any_escaping():
    assert signing_string({"q": ' a/b "c" \\ 中 😀 '}) == 'q a/b "c" \\ 中 😀 '


def test_an_empty_string_value_contributes_only_its_name():
    assert signing_string({"a": "", "b": "x"}) == "abx"


def test_non_string_values_are_written_as_compact_json():
    sent = {
        "i": 1700000000,
        "f": 0.5,
        "t": True,
        "n": None,
        "l": [1, "/"],
        "o": {"k": "中/😀", "e": {}},
    }
    assert signing_string(sent) == 'f0.5i1700000000l[1,"/"]nnullo{"k":"中/😀","e":{}}ttrue'


def test_an_int_dateline_signs_the_same_as_its_string():
    assert compute_sign(SECRET, {**PARAMS, "dateline": 1700000000}) == compute_sign(SECRET, PARAMS)


def test_an_object_value_signs_the_same_as_its_compact_json_string():
    as_string = {**PARAMS, "_o_args": O_ARGS_TEXT}
    assert compute_sign(SECRET, as_string) == compute_sign(SECRET, PARAMS)


def test_a_lone_surrogate_cannot_be_signed():
    with pytest.raises(ValueError):
        compute_sign(SECRET, {"q": "\ud800"})


# --- sign_matches ---------------------------------------------------------------------------------


def test_the_right_sign_matches():
    assert sign_matches(SECRET, PARAMS, "449BB96158842E25915F1838F9730423") is True


def test_a_lower_case_sign_matches():
    assert sign_matches(SECRET, PARAMS, "449bb96158842e25915f1838f9730423") is True


def test_a_sign_made_with_another_secret_does_not_match():
    assert sign_matches(SECRET, PARAMS, compute_sign("other", PARAMS)) is False


def test_a_changed_param_does_not_match():
    assert sign_matches(SECRET, {**PARAMS, "key": "abd"}, compute_sign(SECRET, PARAMS)) is False


def test_an_added_param_does_not_match():
    assert sign_matches(SECRET, {**PARAMS, "cache": "no"}, compute_sign(SECRET, PARAMS)) is False


def test_the_sign_param_itself_in_params_does_not_disturb_the_match():
    sign = compute_sign(SECRET, PARAMS)
    assert sign_matches(SECRET, {**PARAMS, "sign": sign}, sign) is True


def test_empty_and_truncated_signs_do_not_match():
    sign = compute_sign(SECRET, PARAMS)
    assert (sign_matches(SECRET, PARAMS, ""), sign_matches(SECRET, PARAMS, sign[:-1])) == (
        False,
        False,
    )


def test_a_non_ascii_sign_is_a_mismatch_not_an_error():
    assert sign_matches(SECRET, PARAMS, "449BB96158842E25915F1838F973042ß") is False


def test_params_with_a_lone_surrogate_are_a_mismatch_not_an_error():
    assert sign_matches(SECRET, {"q": "\ud800"}, "449BB96158842E25915F1838F9730423") is False


# --- parse_dateline ----------------------------------------------------------------------------


def dateline_error(raw, *, now: float = NOW, window: int = 300) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        parse_dateline(raw, now=now, window_seconds=window)
    assert caught.value.code == AUTH_FAILED
    return caught.value


def test_a_digit_string_dateline_is_returned_as_int():
    assert parse_dateline("1700000000", now=NOW, window_seconds=300) == 1700000000


def test_an_int_dateline_from_a_json_body_is_accepted():
    assert parse_dateline(1700000000, now=NOW, window_seconds=300) == 1700000000


@pytest.mark.parametrize("raw", [None, ""])
def test_a_missing_dateline_says_a_signed_request_needs_it(raw):
    assert dateline_error(raw).detail == (
        "a signed request needs `dateline` (unix time in seconds, e.g. 1700000000) next to "
        "`sign`; `dateline` is one of the signed parameters"
    )


@pytest.mark.parametrize(
    "raw",
    ["abc", "1700000000.0", "-1700000000", " 1700000000", "+1700000000", "١٧٠٠", "1" * 19],
)
def test_a_dateline_that_is_not_digits_says_whole_unix_seconds(raw):
    assert dateline_error(raw).detail == (
        "`dateline` must be unix time in whole seconds, digits only (e.g. 1700000000)"
    )


@pytest.mark.parametrize("raw", [True, False, 1700000000.0, [1700000000], {"t": 1}, 10**18])
def test_a_bool_float_or_other_json_dateline_says_whole_unix_seconds(raw):
    assert dateline_error(raw).detail == (
        "`dateline` must be unix time in whole seconds, digits only (e.g. 1700000000)"
    )


def test_a_stale_dateline_says_how_far_behind_and_the_window():
    assert dateline_error("1700000000", now=NOW + 912).detail == (
        "dateline is 912 s behind the server's clock; signed requests must be within ±300 s of "
        "it: sign again with the current time (and check the client's clock)"
    )


def test_a_future_dateline_beyond_the_window_says_how_far_ahead():
    assert dateline_error("1700000301", now=NOW).detail == (
        "dateline is 301 s ahead of the server's clock; signed requests must be within ±300 s of "
        "it: sign again with the current time (and check the client's clock)"
    )


def test_a_fraction_of_a_second_beyond_the_window_rounds_up_in_the_reason():
    assert dateline_error("1700000000", now=NOW + 300.25).detail.startswith("dateline is 301 s ")


def test_a_dateline_exactly_at_the_window_edge_is_accepted_both_ways():
    assert (
        parse_dateline("1700000000", now=NOW + 300, window_seconds=300),
        parse_dateline("1700000300", now=NOW, window_seconds=300),
    ) == (1700000000, 1700000300)


def test_a_millisecond_dateline_says_to_send_seconds():
    assert dateline_error("1700000000123").detail == (
        "`dateline` looks like milliseconds; send unix time in whole seconds "
        "(e.g. PHP time(), Python int(time.time())) and sign again"
    )


def test_the_window_comes_from_the_caller():
    assert dateline_error("1700000000", now=NOW + 61, window=60).detail.startswith(
        "dateline is 61 s behind the server's clock; signed requests must be within ±60 s"
    )


# --- real PHP judges the client recipe -----------------------------------------------------------


def test_php_query_string_client_signs_what_python_computes_from_the_parsed_query():
    script = (
        PHP_SIGN_FUNCTION
        + r"""
$params = [
    'key' => 'abc',
    'method' => 'v1/chat/completions',
    '_o_args' => json_encode(['messages' => [['role' => 'user',
        'content' => '你好 世界 😀 a/b c+d&e=f 100%']]], JSON_UNESCAPED_UNICODE),
    'dateline' => '1700000000',
    'lang' => 'en',
    'nonce' => 'n 1/2',
    'Zeta' => 'upper case name',
    'ｚ' => 'fullwidth name',
    '😀name' => 'emoji name 😀',
];
$params['sign'] = onebound_sign('s3cr3t', $params);
echo http_build_query($params, '', '&', PHP_QUERY_RFC3986);
"""
    )
    query = php_output(script)
    received = dict(urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True))
    assert received["nonce"] == "n 1/2" and received["😀name"] == "emoji name 😀"
    assert compute_sign(SECRET, received) == received["sign"]
    assert sign_matches(SECRET, received, received["sign"]) is True


def test_php_json_body_client_signs_what_python_computes_from_the_decoded_body():
    script = (
        PHP_SIGN_FUNCTION
        + r"""
$body = [
    'key' => 'abc',
    'method' => 'v1/chat/completions',
    'dateline' => 1700000000,
    'cache' => 'no',
    '_o_args' => [
        'messages' => [['role' => 'user',
            'content' => "你好/世界 😀 \u{2028} \"q\" \\ tab\t new\nline \x01"]],
        'temperature' => 0.5,
        'max_tokens' => 16,
        'stream' => false,
        'stop' => [],
        'metadata' => ['a/b' => 'c d', 'n' => null],
    ],
];
$body['sign'] = onebound_sign('s3cr3t', $body);
echo json_encode($body, JSON_THROW_ON_ERROR);  // default flags: \u escapes and \/ in the body
"""
    )
    body = json.loads(php_output(script))
    assert body["_o_args"]["stop"] == [] and "\u2028" in body["_o_args"]["messages"][0]["content"]
    assert compute_sign(SECRET, body) == body["sign"]


def test_php_recipe_reproduces_the_known_answer():
    script = (
        PHP_SIGN_FUNCTION
        + r"""
echo onebound_sign('s3cr3t', [
    'key' => 'abc',
    'method' => 'v1/chat/completions',
    '_o_args' => ['messages' => [['role' => 'user', 'content' => '你好，世界']]],
    'dateline' => '1700000000',
    'sign' => 'ignored',
    'secret' => 'ignored',
]);
"""
    )
    assert php_output(script) == "449BB96158842E25915F1838F9730423"


def test_php_escapes_u2028_unless_told_so_the_recipe_passes_unescaped_line_terminators():
    script = r"""
echo json_encode("\u{2028}", JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES), "|",
    json_encode("\u{2028}", JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES
        | JSON_UNESCAPED_LINE_TERMINATORS);
"""
    assert php_output(script) == '"\\u2028"|"\u2028"'
    assert signing_string({"q": ["\u2028"]}) == 'q["\u2028"]'


# --- the doc shows exactly the tested recipes --------------------------------------------------


def test_the_doc_shows_the_php_recipe_judged_here():
    assert PHP_SIGN_FUNCTION in DOC.read_text(encoding="utf-8")


def test_the_doc_python_recipe_computes_the_same_sign():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    recipe = next(block for block in blocks if "def onebound_sign" in block)
    namespace: dict = {}
    exec(recipe, namespace)  # noqa: S102 - our own doc's code
    sent = {**PARAMS, "nonce": "n", "Zeta": "1", "ｚ": 2, "😀": True}
    assert namespace["onebound_sign"](SECRET, sent) == compute_sign(SECRET, sent)
