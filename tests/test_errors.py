"""The error-code table of DESIGN.md."""

from __future__ import annotations

import pytest

from proxy.errors import ERROR_CODES, GatewayError, reason_text

DESIGN_CODES = {
    "0000": "success",
    "2000": "Search success but no result",
    "4000": "Server internal error",
    "4001": "Network error",
    "4002": "Target server error",
    "4003": "Param error",
    "4004": "Account not found",
    "4005": "Invalid authentication credentials",
    "4006": "API stopped",
    "4007": "Account stopped",
    "4008": "API rate limit exceeded",
    "4009": "API maintenance",
    "4010": "API not found with these values",
    "4012": "Please add api first",
    "4013": "Number of calls exceeded",
    "4014": "Missing url param",
    "4015": "Wrong pageToken",
    "4016": "Insufficient balance",
    "4017": "timeout error",
    "5000": "unknown error",
}


def test_table_holds_exactly_the_design_codes_with_their_english_texts():
    assert {code: entry.en for code, entry in ERROR_CODES.items()} == DESIGN_CODES


def test_there_is_no_4011():
    assert "4011" not in ERROR_CODES


def test_only_success_and_no_result_are_charged():
    assert {code for code, entry in ERROR_CODES.items() if entry.charged} == {"0000", "2000"}


def test_every_code_has_chinese_and_russian_texts():
    assert all(entry.cn and entry.ru for entry in ERROR_CODES.values())
    assert ERROR_CODES["4013"].cn == "调用次数超限"


def test_reason_is_table_text_then_what_to_fix():
    assert reason_text("4014", "en", "key is missing") == "Missing url param: key is missing"


def test_success_reason_is_empty():
    assert reason_text("0000", "cn") == ""


def test_gateway_error_rejects_codes_outside_the_table():
    with pytest.raises(ValueError):
        GatewayError("4011")


def test_each_code_has_its_openai_door_status_in_the_table():
    statuses = {code: entry.http_status for code, entry in ERROR_CODES.items()}
    assert statuses == {
        "0000": 200,
        "2000": 200,
        "4000": 500,
        "4001": 502,
        "4002": 502,
        "4003": 400,
        "4004": 401,
        "4005": 401,
        "4006": 403,
        "4007": 403,
        "4008": 429,
        "4009": 503,
        "4010": 404,
        "4012": 403,
        "4013": 429,
        "4014": 400,
        "4015": 400,
        "4016": 429,
        "4017": 504,
        "5000": 500,
    }
