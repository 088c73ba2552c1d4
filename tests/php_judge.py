"""Real PHP as the judge of what PHP prints: run php CLI scripts in batches.

Missing php (or its SimpleXML extension) FAILS the tests: `make test` installs them.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess

import pytest

# Pin the settings the formats depend on, whatever php.ini says.
PHP_FLAGS = (
    "-d",
    "serialize_precision=-1",
    "-d",
    "display_errors=stderr",
    "-d",
    "error_reporting=-1",
)

# The client-side decoder documented in docs/formats.md (a test checks the two stay identical).
XML_DECODER_PHP = r"""
/**
 * Decode the gateway's XML format into what json_decode($json, true) gives.
 * Needs ext-simplexml. Throws UnexpectedValueException on malformed input.
 */
function gateway_xml_decode(string $xml)
{
    $root = simplexml_load_string($xml, 'SimpleXMLElement', LIBXML_NONET);
    if ($root === false) {
        throw new UnexpectedValueException('gateway XML is not well-formed');
    }
    return gateway_xml_value($root);
}

function gateway_xml_value(SimpleXMLElement $element)
{
    $attributes = $element->attributes();
    $type = isset($attributes['type']) ? (string) $attributes['type'] : 'string';
    switch ($type) {
        case 'null':
            return null;
        case 'bool':
            return (string) $element === 'true';
        case 'int':
            return (int) (string) $element;
        case 'float':
            return (float) (string) $element;
        case 'list':
            $list = [];
            foreach ($element->children() as $child) {
                $list[] = gateway_xml_value($child);
            }
            return $list;
        case 'object':
            $object = [];
            foreach ($element->children() as $child) {
                $object[gateway_xml_key($child)] = gateway_xml_value($child);
            }
            return $object;
        case 'string':
            if (isset($attributes['base64'])) {
                return base64_decode((string) $attributes['base64'], true);
            }
            return (string) $element;
    }
    throw new UnexpectedValueException("unknown type attribute: $type");
}

function gateway_xml_key(SimpleXMLElement $child): string
{
    $attributes = $child->attributes();
    if (!isset($attributes['key'])) {
        return $child->getName();
    }
    $key = (string) $attributes['key'];
    if ((string) ($attributes['key-encoding'] ?? '') === 'base64') {
        $key = base64_decode($key, true);
    }
    return $key;
}
""".strip()

# Reads a JSON list of cases {"json": canonical JSON, "ours": {format: our output}} on stdin
# and prints a JSON list of PHP's verdicts; every string travels base64-encoded.
_JUDGE_SCRIPT = r"""<?php
__DECODER__

function b64_or_null($s) { return is_string($s) ? base64_encode($s) : null; }

$cases = json_decode(stream_get_contents(STDIN), true, 512, JSON_THROW_ON_ERROR);
$verdicts = [];
foreach ($cases as $case) {
    $json = base64_decode($case['json']);
    $ours = array_map('base64_decode', $case['ours']);
    $array = json_decode($json, true, 512, JSON_THROW_ON_ERROR);
    $expected = serialize($array);
    $object = json_decode($json);
    $object_ok = json_last_error() === JSON_ERROR_NONE;
    $v = [
        'json' => $object_ok ? b64_or_null(json_encode($object)) : null,
        'jsonu' => $object_ok ? b64_or_null(json_encode($object, JSON_UNESCAPED_UNICODE)) : null,
        'serialize' => base64_encode(serialize($array)),
        'var_export' => base64_encode(var_export($array, true)),
    ];
    if (isset($ours['serialize'])) {
        $back = unserialize($ours['serialize'], ['allowed_classes' => false]);
        $v['unserialize_ok'] = serialize($back) === $expected;
    }
    if (isset($ours['var_export'])) {
        try {
            $v['var_export_eval_ok'] = serialize(eval('return ' . $ours['var_export'] . ';'))
                === $expected;
        } catch (ParseError $e) {
            $v['var_export_eval_ok'] = false;
        }
    }
    if (isset($ours['xml'])) {
        if (!function_exists('simplexml_load_string')) {
            fwrite(STDERR, "php has no SimpleXML extension: install php-xml\n");
            exit(3);
        }
        libxml_use_internal_errors(true);
        try {
            $v['xml_ok'] = serialize(gateway_xml_decode($ours['xml'])) === $expected;
        } catch (UnexpectedValueException $e) {
            $v['xml_ok'] = false;
        }
        libxml_clear_errors();
    }
    $verdicts[] = $v;
}
echo json_encode($verdicts, JSON_THROW_ON_ERROR);
""".replace("__DECODER__", XML_DECODER_PHP)

_STRING_VERDICTS = ("json", "jsonu", "serialize", "var_export")


def php_binary() -> str:
    """Path of the php CLI; fails the calling test (never skips) when it is missing."""
    path = shutil.which("php")
    if path is None:
        pytest.fail(
            "php CLI not found on PATH: the formats tests need real PHP as the judge "
            "(`make test` installs php-cli and php-xml)",
            pytrace=False,
        )
    return path


def run_php(script: str, stdin: bytes = b"", *args: str) -> subprocess.CompletedProcess:
    """Run a PHP script given as source text; return the completed process (bytes output)."""
    return subprocess.run(
        [php_binary(), *PHP_FLAGS, "-r", script.removeprefix("<?php"), *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


def judge(cases: list[tuple[str, dict[str, str]]]) -> list[dict]:
    """PHP's verdict on each (canonical JSON, {format: our output}) case, in one php process.

    Each verdict has PHP's own "json"/"jsonu" (None when json_decode cannot make an object),
    "serialize" and "var_export", plus "unserialize_ok", "var_export_eval_ok" and "xml_ok"
    for the outputs of ours that were given.
    """
    payload = [
        {"json": _b64(canonical), "ours": {fmt: _b64(text) for fmt, text in ours.items()}}
        for canonical, ours in cases
    ]
    done = run_php(_JUDGE_SCRIPT, json.dumps(payload).encode())
    if done.returncode != 0 or done.stderr:
        pytest.fail(f"php judge failed ({done.returncode}): {done.stderr.decode()[:2000]}")
    verdicts = json.loads(done.stdout)
    for verdict in verdicts:
        for fmt in _STRING_VERDICTS:
            if verdict[fmt] is not None:
                verdict[fmt] = base64.b64decode(verdict[fmt]).decode("utf-8")
    return verdicts


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")
