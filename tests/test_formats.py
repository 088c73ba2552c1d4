"""proxy.formats must print byte-for-byte what real PHP prints; php itself is the judge."""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from collections import OrderedDict
from enum import IntEnum
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy import formats, php_values
from proxy.formats import (
    RESULT_TYPES,
    is_valid_callback,
    render,
    render_json,
    render_jsonp,
    render_serialize,
    render_var_export,
    render_xml,
)
from tests.php_judge import XML_DECODER_PHP, judge, php_binary, run_php

ROOT = Path(__file__).resolve().parent.parent

RENDERERS = {
    "json": render_json,
    "jsonu": lambda value: render_json(value, unescaped_unicode=True),
    "serialize": render_serialize,
    "var_export": render_var_export,
    "xml": render_xml,
}


class Color(IntEnum):
    RED = 1


class Name(str):
    pass


def canonical(value) -> str:
    return json.dumps(value)


def php_prints(fmt: str, values: list) -> list[str | None]:
    """What PHP prints in format ``fmt`` for each value (one php process for all of them)."""
    return [verdict[fmt] for verdict in judge([(canonical(v), {}) for v in values])]


def assert_php_agrees(fmt: str, cases: list[tuple[object, str]]) -> None:
    """Our output for each value is exactly the expected text, and so is PHP's."""
    values = [value for value, _ in cases]
    expected = [text for _, text in cases]
    assert [RENDERERS[fmt](value) for value in values] == expected
    assert php_prints(fmt, values) == expected


# ---------------------------------------------------------------------------
# json / jsonu
# ---------------------------------------------------------------------------


def test_json_escapes_slash():
    assert_php_agrees("json", [("a/b</x>", '"a\\/b<\\/x>"')])


def test_json_escapes_non_ascii_as_lowercase_hex():
    assert_php_agrees("json", [("é中\u00ff", '"\\u00e9\\u4e2d\\u00ff"')])


def test_json_escapes_non_bmp_as_surrogate_pair():
    assert_php_agrees("json", [("😀", '"\\ud83d\\ude00"')])


def test_json_escapes_control_characters_like_php():
    assert_php_agrees(
        "json",
        [
            (
                '\x00\x01\x08\x0c\n\r\t\x1f\x7f"\\',
                '"\\u0000\\u0001\\b\\f\\n\\r\\t\\u001f\x7f\\"\\\\"',
            )
        ],
    )


def test_json_prints_empty_dict_as_object_and_empty_list_as_array():
    assert_php_agrees("json", [({"o": {}, "l": []}, '{"o":{},"l":[]}'), ({}, "{}"), ([], "[]")])


def test_json_keeps_numeric_string_keys_as_object_keys():
    assert_php_agrees("json", [({"0": "a", "1": "b"}, '{"0":"a","1":"b"}')])


def test_json_prints_scalars_without_spaces():
    assert_php_agrees("json", [([True, False, None, 0, -1, "x"], '[true,false,null,0,-1,"x"]')])


FLOAT_CASES = [
    # value, json_encode, serialize, var_export
    (1.0, "1", "d:1;", "1.0"),
    (-0.0, "-0", "d:-0;", "-0.0"),
    (0.0, "0", "d:0;", "0.0"),
    (0.1, "0.1", "d:0.1;", "0.1"),
    (-0.25, "-0.25", "d:-0.25;", "-0.25"),
    (100.0, "100", "d:100;", "100.0"),
    (0.0001, "0.0001", "d:0.0001;", "0.0001"),
    (0.00012, "0.00012", "d:0.00012;", "0.00012"),
    (1e-5, "1.0e-5", "d:1.0E-5;", "1.0E-5"),
    (1e-7, "1.0e-7", "d:1.0E-7;", "1.0E-7"),
    (-1.5e-7, "-1.5e-7", "d:-1.5E-7;", "-1.5E-7"),
    (1e15, "1000000000000000", "d:1000000000000000;", "1000000000000000.0"),
    (1e16, "10000000000000000", "d:10000000000000000;", "10000000000000000.0"),
    (1e17, "1.0e+17", "d:1.0E+17;", "1.0E+17"),
    (1.5e15, "1500000000000000", "d:1500000000000000;", "1500000000000000.0"),
    (
        123456789012345678.0,
        "1.2345678901234568e+17",
        "d:1.2345678901234568E+17;",
        "1.2345678901234568E+17",
    ),
    (12345678901234567.0, "12345678901234568", "d:12345678901234568;", "12345678901234568.0"),
    (1e25, "1.0e+25", "d:1.0E+25;", "1.0E+25"),
    (5e-324, "5.0e-324", "d:5.0E-324;", "5.0E-324"),
    (
        1.7976931348623157e308,
        "1.7976931348623157e+308",
        "d:1.7976931348623157E+308;",
        "1.7976931348623157E+308",
    ),
    (2.5e-100, "2.5e-100", "d:2.5E-100;", "2.5E-100"),
    (0.1 + 0.2, "0.30000000000000004", "d:0.30000000000000004;", "0.30000000000000004"),
]


def test_json_prints_floats_like_php():
    assert_php_agrees("json", [(value, text) for value, text, _, _ in FLOAT_CASES])


def test_json_prints_integers_beyond_int64_as_floats():
    assert_php_agrees(
        "json",
        [
            (2**63 - 1, "9223372036854775807"),
            (-(2**63), "-9223372036854775808"),
            (2**63, "9.223372036854776e+18"),
            (-(2**63) - 1, "-9.223372036854776e+18"),
            (10**20, "1.0e+20"),
        ],
    )


def test_jsonu_keeps_unicode_raw():
    assert_php_agrees("jsonu", [("é中😀/", '"é中😀\\/"')])


def test_jsonu_still_escapes_line_and_paragraph_separators():
    assert_php_agrees("jsonu", [("a\u2028b\u2029c", '"a\\u2028b\\u2029c"')])


def test_json_key_starting_with_nul_is_escaped_though_php_objects_cannot_hold_it():
    # json_decode() refuses such a property name, so PHP has no answer; we print the key
    # escaped and json_decode($out, true) reads it back.
    value = {"\x00a": 1}
    assert render_json(value) == '{"\\u0000a":1}'
    assert php_prints("json", [value]) == [None]
    script = "var_export(json_decode(stream_get_contents(STDIN), true));"
    read_back = run_php(script, render_json(value).encode()).stdout
    assert read_back == b"array (\n  '' . \"\\0\" . 'a' => 1,\n)"


# ---------------------------------------------------------------------------
# serialize
# ---------------------------------------------------------------------------


def test_serialize_counts_utf8_bytes():
    assert_php_agrees("serialize", [("é中😀", 's:9:"é中😀";'), ("", 's:0:"";')])


def test_serialize_turns_canonical_numeric_string_keys_into_int_keys():
    value = {
        "123": 1,
        "-5": 2,
        "0": 3,
        "9223372036854775807": 4,
        "-9223372036854775808": 5,
    }
    expected = (
        "a:5:{i:123;i:1;i:-5;i:2;i:0;i:3;i:9223372036854775807;i:4;i:-9223372036854775808;i:5;}"
    )
    assert_php_agrees("serialize", [(value, expected)])


def test_serialize_keeps_non_canonical_numeric_keys_as_strings():
    keys = [
        "05",
        "1.5",
        "-0",
        " 1",
        "1 ",
        "+1",
        "9223372036854775808",
        "-9223372036854775809",
        "",
        "1e3",
        "0x1",
    ]
    value = {key: 0 for key in keys}
    expected = f"a:{len(keys)}:{{" + "".join(f's:{len(k)}:"{k}";i:0;' for k in keys) + "}"
    assert_php_agrees("serialize", [(value, expected)])


def test_serialize_prints_floats_like_php():
    assert_php_agrees("serialize", [(value, text) for value, _, text, _ in FLOAT_CASES])


def test_serialize_prints_big_integers_as_floats():
    assert_php_agrees(
        "serialize", [(2**64, "d:1.8446744073709552E+19;"), (2**63 - 1, "i:9223372036854775807;")]
    )


def test_serialize_prints_null_and_booleans():
    assert_php_agrees("serialize", [([None, True, False], "a:3:{i:0;N;i:1;b:1;i:2;b:0;}")])


def test_serialize_prints_lists_and_objects_as_arrays():
    assert_php_agrees(
        "serialize",
        [
            (
                {"l": ["x"], "o": {"k": []}},
                'a:2:{s:1:"l";a:1:{i:0;s:1:"x";}s:1:"o";a:1:{s:1:"k";a:0:{}}}',
            )
        ],
    )


# ---------------------------------------------------------------------------
# var_export
# ---------------------------------------------------------------------------


def test_var_export_nests_arrays_like_php():
    value = {"a": [1, {"b": None}], "c": {}, "7": "x"}
    expected = (
        "array (\n"
        "  'a' => \n"
        "  array (\n"
        "    0 => 1,\n"
        "    1 => \n"
        "    array (\n"
        "      'b' => NULL,\n"
        "    ),\n"
        "  ),\n"
        "  'c' => \n"
        "  array (\n"
        "  ),\n"
        "  7 => 'x',\n"
        ")"
    )
    assert_php_agrees("var_export", [(value, expected)])


def test_var_export_prints_empty_array():
    assert_php_agrees("var_export", [([], "array (\n)"), ({}, "array (\n)")])


def test_var_export_escapes_quote_and_backslash():
    assert_php_agrees(
        "var_export", [({"it's\\": "a'b\\c"}, "array (\n  'it\\'s\\\\' => 'a\\'b\\\\c',\n)")]
    )


def test_var_export_splices_nul_bytes_as_double_quoted_strings():
    assert_php_agrees(
        "var_export",
        [
            ("a\x00b", "'a' . \"\\0\" . 'b'"),
            ("\x00", "'' . \"\\0\" . ''"),
            ({"\x00": 1}, "array (\n  '' . \"\\0\" . '' => 1,\n)"),
        ],
    )


def test_var_export_keeps_other_control_characters_raw():
    assert_php_agrees("var_export", [("\x01\t\r\n\x7f$x", "'\x01\t\r\n\x7f$x'")])


def test_var_export_prints_floats_with_a_fraction():
    assert_php_agrees("var_export", [(value, text) for value, _, _, text in FLOAT_CASES])


def test_var_export_prints_php_int_min_as_an_expression():
    assert_php_agrees(
        "var_export",
        [
            (-(2**63), "-9223372036854775807-1"),
            ([-(2**63)], "array (\n  0 => -9223372036854775807-1,\n)"),
        ],
    )


def test_var_export_prints_null_and_booleans():
    assert_php_agrees("var_export", [(None, "NULL"), (True, "true"), (False, "false")])


NASTY = {
    "s": "a'b\\c\x00d\r\n\t\x01$x{$y}?>",
    "k'\\\x00": ["é", "😀", 1e-7, -0.0, 1.0, 2**70, -(2**63)],
    "05": {"": [], "-5": {}},
}


def test_var_export_output_passes_php_lint(tmp_path):
    source = tmp_path / "out.php"
    source.write_bytes(b"<?php return " + render_var_export(NASTY).encode() + b";\n")
    done = subprocess.run([php_binary(), "-l", str(source)], capture_output=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_var_export_output_evals_back_to_the_json_decode_array():
    [verdict] = judge([(canonical(NASTY), {"var_export": render_var_export(NASTY)})])
    assert verdict["var_export_eval_ok"] is True


def test_serialize_output_unserializes_to_the_json_decode_array():
    [verdict] = judge([(canonical(NASTY), {"serialize": render_serialize(NASTY)})])
    assert verdict["unserialize_ok"] is True


# ---------------------------------------------------------------------------
# Values PHP cannot hold
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("result_type", RESULT_TYPES)
def test_non_finite_floats_render_as_null(result_type):
    value = [math.inf, -math.inf, math.nan]
    assert render(value, result_type) == render([None, None, None], result_type)


@pytest.mark.parametrize("result_type", RESULT_TYPES)
def test_integers_too_big_for_a_float_render_as_null(result_type):
    assert render([10**400], result_type) == render([None], result_type)


@pytest.mark.parametrize("result_type", RESULT_TYPES)
def test_lone_surrogates_become_replacement_characters(result_type):
    value = {"k\ud800": "a\udc00b\ud800"}
    assert render(value, result_type) == render({"k\ufffd": "a\ufffdb\ufffd"}, result_type)


def test_adjacent_surrogate_code_points_join_into_one_character():
    # json.dumps() of such a str is "\ud83d\ude00", which PHP's json_decode reads as one emoji.
    assert render_serialize("\ud83d\ude00") == render_serialize("😀") == 's:4:"😀";'


def test_lone_surrogate_output_matches_php_for_the_replacement_character():
    value = ["\ud800", {"\udfff": 1}]
    php_value = ["\ufffd", {"\ufffd": 1}]
    [verdict] = judge([(canonical(php_value), {})])
    for fmt in ("json", "jsonu", "serialize", "var_export"):
        assert RENDERERS[fmt](value) == verdict[fmt], fmt


@pytest.mark.parametrize("result_type", RESULT_TYPES)
def test_tuples_and_subclasses_render_as_their_base_types(result_type):
    value = OrderedDict(t=(1, 2.5), e=Color.RED, s=Name("x"))
    assert render(value, result_type) == render({"t": [1, 2.5], "e": 1, "s": "x"}, result_type)


def test_non_json_types_are_rejected():
    with pytest.raises(TypeError):
        render({"a": object()}, "json")
    with pytest.raises(TypeError):
        render({1: "a"}, "serialize")


# ---------------------------------------------------------------------------
# xml
# ---------------------------------------------------------------------------

DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'


def test_xml_documents_start_with_declaration_and_root():
    assert render_xml("hi") == DECL + "<root>hi</root>"


def test_xml_encodes_the_documented_example():
    value = {
        "code": 200,
        "ok": True,
        "price": 1.5,
        "note": None,
        "tags": ["a", "1"],
        "meta": {},
        "user name": "Zoë & <co>",
        "42": "x\r\n",
    }
    assert render_xml(value) == DECL + (
        '<root type="object"><code type="int">200</code><ok type="bool">true</ok>'
        '<price type="float">1.5</price><note type="null"/>'
        '<tags type="list"><item>a</item><item>1</item></tags><meta type="object"/>'
        '<item key="user name">Zoë &amp; &lt;co&gt;</item><item key="42">x&#13;\n</item></root>'
    )
    assert render_xml(value) in (ROOT / "docs/formats.md").read_text()


def test_xml_distinguishes_list_from_object_by_type_attribute():
    assert render_xml({"l": [], "o": {}, "l1": [1], "o1": {"a": 1}}) == DECL + (
        '<root type="object"><l type="list"/><o type="object"/>'
        '<l1 type="list"><item type="int">1</item></l1>'
        '<o1 type="object"><a type="int">1</a></o1></root>'
    )


def test_xml_keeps_string_one_apart_from_int_one_and_empty_string_apart_from_null():
    assert render_xml(["1", 1, "", None, "true", True, 1.0]) == DECL + (
        '<root type="list"><item>1</item><item type="int">1</item><item/>'
        '<item type="null"/><item>true</item><item type="bool">true</item>'
        '<item type="float">1</item></root>'
    )


@pytest.mark.parametrize(
    "key",
    [
        "a b",
        "1a",
        "xml",
        "xmlfoo",
        "XmLx",
        "a:b",
        "a-b",
        "a.b",
        "<x>",
        "é",
        "",
        "a" * 65,
        "a\n",
        "item key",
        'x"y',
    ],
)
def test_xml_writes_unsafe_keys_only_inside_a_key_attribute(key):
    body = render_xml({key: 1})
    assert body.startswith(DECL + '<root type="object"><item key="')
    assert body.endswith('" type="int">1</item></root>')


@pytest.mark.parametrize("key", ["a", "_", "A_1", "item", "x" * 64, "type", "xm", "_xml"])
def test_xml_uses_safe_keys_as_element_names(key):
    assert render_xml({key: 1}) == DECL + f'<root type="object"><{key} type="int">1</{key}></root>'


def test_xml_escapes_markup_in_text():
    assert render_xml("</x>&]]><![CDATA[") == DECL + (
        "<root>&lt;/x&gt;&amp;]]&gt;&lt;![CDATA[</root>"
    )


def test_xml_escapes_carriage_return_in_text():
    assert render_xml("a\r\nb\tc") == DECL + "<root>a&#13;\nb\tc</root>"


def test_xml_escapes_quote_and_whitespace_in_key_attribute():
    assert render_xml({'"\t\n\r<&>': 1}) == DECL + (
        '<root type="object"><item key="&quot;&#9;&#10;&#13;&lt;&amp;&gt;" type="int">1</item>'
        "</root>"
    )


def test_xml_drops_characters_xml_forbids_from_the_text_and_keeps_the_exact_value_in_base64():
    assert render_xml(["a\x00b", "\x1f", "\ufffe", "x\uffff&"]) == DECL + (
        '<root type="list"><item base64="YQBi">ab</item><item base64="Hw=="/>'
        '<item base64="77++"/><item base64="eO+/vyY=">x&amp;</item></root>'
    )


# A model answer as the envelope carries it, with one character XML 1.0 forbids.
ANSWER_WITH_SOH = {"response": {"choices": [{"message": {"content": "Hello\x01 world 你好"}}]}}


def test_xml_text_of_a_string_with_a_forbidden_character_stays_readable_in_php():
    done = run_php(
        "$x = simplexml_load_string(stream_get_contents(STDIN));"
        "echo (string) $x->response->choices->item->message->content;",
        render_xml(ANSWER_WITH_SOH).encode(),
    )
    assert (done.returncode, done.stderr, done.stdout.decode()) == (0, b"", "Hello world 你好")


def test_xml_decoder_gives_the_exact_string_with_its_forbidden_character():
    done = run_php(
        XML_DECODER_PHP + "echo json_encode(gateway_xml_decode(stream_get_contents(STDIN)));",
        render_xml(ANSWER_WITH_SOH).encode(),
    )
    assert (done.returncode, done.stderr) == (0, b"")
    assert json.loads(done.stdout) == ANSWER_WITH_SOH


def test_xml_base64_encodes_keys_with_characters_xml_forbids():
    assert render_xml({"\x00k": 1}) == DECL + (
        '<root type="object"><item key="AGs=" key-encoding="base64" type="int">1</item></root>'
    )


def test_xml_prints_big_integers_as_floats():
    assert render_xml([2**64]) == DECL + (
        '<root type="list"><item type="float">1.8446744073709552E+19</item></root>'
    )


def test_xml_round_trips_through_simplexml_and_the_documented_decoder():
    cases = [
        NASTY,
        "x",
        "",
        None,
        1,
        1.0,
        -0.0,
        [],
        {},
        {"a": "\r\n \t"},
        {"\x00": "\x00"},
        "  ",
        {"item": [{"item": 1}]},
        {"l": [], "o": {}},
        "\ufffe\U0010ffff\x85",
    ]
    verdicts = judge([(canonical(value), {"xml": render_xml(value)}) for value in cases])
    assert [verdict["xml_ok"] for verdict in verdicts] == [True] * len(cases)


def test_docs_contain_the_xml_decoder_verbatim():
    assert XML_DECODER_PHP in (ROOT / "docs/formats.md").read_text()


# ---------------------------------------------------------------------------
# JSONP
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["cb", "jQuery1830123_1699999999", "$.x", "a.b.c", "_", "$", "A" * 64, "x.classy"],
)
def test_valid_callback_names_are_accepted(name):
    assert is_valid_callback(name)


@pytest.mark.parametrize(
    "name",
    [
        "alert(1)//",
        "a;b",
        "<script>",
        "a..b",
        "1abc",
        "function",
        "a.function",
        "a" * 65,
        "",
        "é",
        "caf\u00e9",
        "ｃｂ",
        "a.",
        ".a",
        "a b",
        "cb\n",
        "a-b",
        "a[0]",
        "new",
        "this.x",
        "constructor\u200b",
    ],
)
def test_hostile_callback_names_are_rejected(name):
    assert not is_valid_callback(name)


def test_jsonp_wraps_json_after_an_empty_comment():
    assert render_jsonp({"a": "é/"}, "cb.x") == '/**/cb.x({"a":"\\u00e9\\/"});'


def test_jsonp_unescaped_unicode_keeps_unicode_raw():
    assert render_jsonp(["é"], "cb", unescaped_unicode=True) == '/**/cb(["é"]);'


def test_jsonp_rejects_an_invalid_callback():
    with pytest.raises(ValueError):
        render_jsonp({}, "alert(1)//")


# ---------------------------------------------------------------------------
# render()
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result_type", "content_type"),
    [
        ("json", "application/json; charset=utf-8"),
        ("jsonu", "application/json; charset=utf-8"),
        ("xml", "application/xml; charset=utf-8"),
        ("serialize", "text/plain; charset=utf-8"),
        ("var_export", "text/plain; charset=utf-8"),
    ],
)
def test_render_returns_utf8_body_and_content_type(result_type, content_type):
    body, header = render({"k": "é"}, result_type)
    assert header == content_type
    assert body == RENDERERS[result_type]({"k": "é"}).encode("utf-8")


@pytest.mark.parametrize("result_type", ["json", "jsonu"])
def test_render_with_callback_returns_jsonp(result_type):
    body, header = render(["é"], result_type, callback="cb")
    assert header == "application/javascript; charset=utf-8"
    assert body == f"/**/cb({RENDERERS[result_type](['é'])});".encode()


@pytest.mark.parametrize("result_type", ["xml", "serialize", "var_export"])
def test_render_ignores_callback_for_other_formats(result_type):
    assert render([1], result_type, callback="alert(1)//") == render([1], result_type)


def test_render_rejects_unknown_result_type():
    with pytest.raises(ValueError):
        render({}, "yaml")


def test_render_rejects_invalid_callback():
    with pytest.raises(ValueError):
        render({}, "json", callback="a;b")


def imported_modules(module) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text())
    modules = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    modules |= {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    return modules


def test_formats_module_imports_only_the_standard_library():
    # ... and the PHP value model it renders (proxy/php_values.py), which imports only that.
    modules = imported_modules(formats) - {"proxy.php_values"}
    assert {name.split(".")[0] for name in modules} <= set(sys.stdlib_module_names)
    modules = imported_modules(php_values)
    assert {name.split(".")[0] for name in modules} <= set(sys.stdlib_module_names)


# ---------------------------------------------------------------------------
# Property tests: generated payloads, judged by php in one batch
# ---------------------------------------------------------------------------

TRICKY = list(
    "/\\\"'<>&]\r\n\t\x00\x01\x08\x0b\x0c\x1f\x7f\x85\u2028\u2029\ufeff\ufffe\uffff"
    "中文日本語한국😀𝄞é \U0010ffff"
)
TRICKY_STRINGS = [
    "]]>",
    "</x>",
    "&amp;",
    "<![CDATA[",
    "\r\n",
    " ",
    "",
    "?>",
    "' . \"",
    "<?xml",
    "\\u0000",
    "${x}",
]
SPECIAL_KEYS = [
    "",
    "0",
    "05",
    "-0",
    "1.5",
    " 1",
    "+1",
    "-5",
    "123",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "xml",
    "xmlns",
    "item",
    "key",
    "type",
    "encoding",
    "_",
    "a" * 64,
    "a" * 65,
]
SPECIAL_NUMBERS = [
    1e-7,
    1.0,
    -0.25,
    -0.0,
    0.0,
    1e15,
    1e16,
    1e17,
    1e25,
    5e-324,
    0.1,
    123456789012345678.0,
    2**63 - 1,
    -(2**63),
    2**63,
    -(2**63) - 1,
    10**30,
]

texts = st.one_of(
    st.text(st.one_of(st.sampled_from(TRICKY), st.characters(codec="utf-8")), max_size=24),
    st.sampled_from(TRICKY_STRINGS),
)
keys = st.one_of(
    texts,
    st.sampled_from(SPECIAL_KEYS),
    st.integers(-(10**20), 10**20).map(str),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,66}", fullmatch=True),
)
numbers = st.one_of(
    st.integers(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(SPECIAL_NUMBERS),
)
leaves = st.one_of(st.none(), st.booleans(), numbers, texts)
payloads = st.one_of(
    st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=6) | st.dictionaries(keys, children, max_size=6)
        ),
        max_leaves=40,
    ),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=20),
)


def _deep(levels: int):
    value: object = "bottom"
    for level in range(levels):
        value = [value, level] if level % 2 else {f"k{level}": value, "05": level}
    return value


FIXED_PAYLOADS = [
    NASTY,
    _deep(20),
    {"": {}, "0": [], "l": [[]], "o": [{}]},
    "中文😀",
    SPECIAL_NUMBERS,
    dict.fromkeys(SPECIAL_KEYS, 1),
    TRICKY_STRINGS,
    "".join(TRICKY),
]


@pytest.fixture(scope="module")
def judged_payloads() -> list[tuple[object, dict[str, str], dict]]:
    """(payload, our outputs, php's verdict) for 200 generated payloads plus fixed ones."""
    collected = list(FIXED_PAYLOADS)

    @settings(
        max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(payloads)
    def collect(value):
        collected.append(value)

    collect()
    ours = [
        {
            "json": render_json(value),
            "jsonu": render_json(value, unescaped_unicode=True),
            "serialize": render_serialize(value),
            "var_export": render_var_export(value),
            "xml": render_xml(value),
        }
        for value in collected
    ]
    verdicts = judge(
        [
            (canonical(value), {fmt: out[fmt] for fmt in ("serialize", "var_export", "xml")})
            for value, out in zip(collected, ours, strict=True)
        ]
    )
    return list(zip(collected, ours, verdicts, strict=True))


def _has_nul_leading_key(value) -> bool:
    if isinstance(value, dict):
        return any(k.startswith("\x00") or _has_nul_leading_key(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul_leading_key(v) for v in value)
    return False


def _mismatches(judged, fmt: str) -> list:
    return [
        (value, out[fmt], verdict[fmt])
        for value, out, verdict in judged
        if verdict[fmt] != out[fmt]
    ]


def test_generated_payloads_are_many(judged_payloads):
    assert len(judged_payloads) >= 150


@pytest.mark.parametrize("fmt", ["json", "jsonu"])
def test_json_matches_php_on_generated_payloads(judged_payloads, fmt):
    decodable = [case for case in judged_payloads if case[2][fmt] is not None]
    assert all(_has_nul_leading_key(case[0]) for case in judged_payloads if case[2][fmt] is None)
    assert _mismatches(decodable, fmt) == []


def test_serialize_matches_php_on_generated_payloads(judged_payloads):
    assert _mismatches(judged_payloads, "serialize") == []


def test_var_export_matches_php_on_generated_payloads(judged_payloads):
    assert _mismatches(judged_payloads, "var_export") == []


def test_serialize_unserializes_back_on_generated_payloads(judged_payloads):
    assert [value for value, _, verdict in judged_payloads if not verdict["unserialize_ok"]] == []


def test_var_export_evals_back_on_generated_payloads(judged_payloads):
    failed = [value for value, _, verdict in judged_payloads if not verdict["var_export_eval_ok"]]
    assert failed == []


def test_xml_round_trips_on_generated_payloads(judged_payloads):
    assert [value for value, _, verdict in judged_payloads if not verdict["xml_ok"]] == []
