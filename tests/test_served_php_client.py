"""As a user meets it: the gateway under gunicorn (2 workers) on a real socket, the stub as
upstream, and a PHP 8 curl client decoding all five formats; the access log holds no secret."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest
import requests

from tests.php_judge import XML_DECODER_PHP, run_php
from tests.served import ServedGateway

PHP_CLIENT = r"""<?php
__DECODER__
[$_, $base, $key, $secret] = $argv;
$text = "中文 </x> & \"quotes\" \\ /";
$args = json_encode(['messages' => [['role' => 'user', 'content' => $text]]]);
function fetch(string $url): string {
    $ch = curl_init($url);
    curl_setopt($ch, CURLOPT_RETURNTRANSFER, true);
    $body = curl_exec($ch);
    if ($body === false || curl_getinfo($ch, CURLINFO_HTTP_CODE) !== 200) { exit(2); }
    return $body;
}
$out = [];
foreach (['json', 'jsonu', 'serialize', 'var_export', 'xml'] as $type) {
    $url = $base . '/openai/custom/?key=' . urlencode($key) . '&secret=' . urlencode($secret)
        . '&method=v1/chat/completions&result_type=' . $type . '&_o_args=' . urlencode($args);
    $body = fetch($url);
    switch ($type) {
        case 'json':
        case 'jsonu': $value = json_decode($body, true, 512, JSON_THROW_ON_ERROR); break;
        case 'serialize': $value = unserialize($body, ['allowed_classes' => false]); break;
        case 'var_export': $value = eval('return ' . $body . ';'); break;
        case 'xml': $value = gateway_xml_decode($body); break;
    }
    $out[$type] = $value;
}
echo json_encode($out, JSON_UNESCAPED_UNICODE);
""".replace("__DECODER__", XML_DECODER_PHP)


# The same client asking the Feishu platform for its tenant token (no _o_args).
FEISHU_PHP_CLIENT = PHP_CLIENT.replace("'/openai/custom/?key='", "'/feishu/custom/?key='").replace(
    "&method=v1/chat/completions&result_type=' . $type . '&_o_args=' . urlencode($args)",
    "&method=feishu/auth&result_type=' . $type",
)


@pytest.fixture(scope="module")
def served(tmp_path_factory, stub):
    workdir = tmp_path_factory.mktemp("served")
    gateway = ServedGateway.on_stub(
        workdir,
        stub,
    )
    account = gateway.flask_json("accounts", "create", "php")
    gateway.start()
    yield {"base": gateway.base, "account": account, "log": gateway.log_path, "gateway": gateway}
    gateway.stop()


def test_php_curl_client_reads_the_same_envelope_in_all_five_formats(served):
    account = served["account"]
    done = run_php(PHP_CLIENT, b"", served["base"], account["key"], account["secret"])
    assert done.returncode == 0, done.stderr.decode()
    decoded = json.loads(done.stdout)
    first = decoded["json"]
    assert first["error_code"] == "0000"
    assert first["response"]["choices"][0]["message"]["content"] == (
        'stub reply: 中文 </x> & "quotes" \\ /'
    )
    for result_type, envelope in decoded.items():
        assert list(envelope) == list(first), result_type
        assert envelope["response"] == first["response"], result_type
        assert envelope["call_args"]["result_type"] == result_type
        assert envelope["error_code"] == "0000"


def test_php_curl_client_gets_a_feishu_token_through_feishu_custom_in_all_five_formats(served):
    account = served["account"]
    done = run_php(FEISHU_PHP_CLIENT, b"", served["base"], account["key"], account["secret"])
    assert done.returncode == 0, done.stderr.decode()
    decoded = json.loads(done.stdout)
    assert list(decoded) == ["json", "jsonu", "serialize", "var_export", "xml"]
    token = decoded["json"]["response"]["tenant_access_token"]
    assert token.startswith("t-stub-")
    for result_type, envelope in decoded.items():
        assert envelope["error_code"] == "0000", (result_type, envelope)
        assert envelope["api_type"] == "feishu", result_type
        assert envelope["response"]["tenant_access_token"] == token, result_type  # kept once
        assert 7200 - 300 - 60 <= envelope["response"]["expire"] <= 7200, result_type
        assert envelope["call_args"]["result_type"] == result_type


def test_var_export_answer_passes_php_lint(served, tmp_path):
    account = served["account"]
    body = requests.get(
        served["base"] + "/api",
        params={
            "key": account["key"],
            "secret": account["secret"],
            "method": "v1/models",
            "result_type": "var_export",
        },
        timeout=10,
    ).text
    source = tmp_path / "answer.php"
    source.write_text("<?php return " + body + ";\n", encoding="utf-8")
    lint = subprocess.run(["php", "-l", str(source)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_access_log_has_no_query_string_key_or_secret(served):
    account = served["account"]
    requests.get(
        served["base"] + "/api",
        params={"key": account["key"], "secret": account["secret"], "method": "v1/models"},
        timeout=10,
    )
    time.sleep(0.3)  # let the worker flush its access line
    log_text = served["log"].read_text(encoding="utf-8", errors="replace")
    assert '"GET /api HTTP/1.1" 200' in log_text
    assert account["secret"] not in log_text and account["key"] not in log_text
    assert "secret=" not in log_text and "key=" not in log_text


def raw_exchange(base: str, request: bytes) -> tuple[str, dict, bytes]:
    """(status line, headers, body) of a raw HTTP/1.1 request: for what clients like requests
    refuse to send."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status, headers, body


def test_a_request_line_gunicorn_refuses_is_logged_without_key_or_secret(served):
    account = served["account"]
    line = f"GET /api?key={account['key']}&secret={account['secret']}&x=\x01 HTTP/1.1"
    status, _, _ = raw_exchange(served["base"], line.encode() + b"\r\nHost: a\r\n\r\n")
    assert status == "HTTP/1.1 400 Bad Request"
    time.sleep(0.3)  # let the worker flush its log line
    log_text = served["log"].read_text(encoding="utf-8", errors="replace")
    assert (
        "Invalid request from ip=127.0.0.1: InvalidRequestLine "
        "(the request is not quoted: it may hold a key or secret)" in log_text
    )
    assert account["secret"] not in log_text and account["key"] not in log_text


def test_a_request_line_gunicorn_refuses_is_answered_as_json(served):
    status, headers, body = raw_exchange(served["base"], b"BLAH\r\n\r\n")
    assert (status, headers["Content-Type"]) == ("HTTP/1.1 400 Bad Request", "application/json")
    assert json.loads(body) == {
        "code": 400,
        "status": "Bad Request",
        "message": "Invalid Request Line (the text sent is not repeated)",
    }


def test_too_long_a_request_line_is_a_json_414(served):
    request = b"GET /api?_o_args=" + b"x" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    status, headers, body = raw_exchange(served["base"], request)
    assert (status, headers["Content-Type"]) == ("HTTP/1.1 414 URI Too Long", "application/json")
    assert json.loads(body) == {
        "code": 414,
        "status": "URI Too Long",
        "message": "Request Line is too large (9026 > 8190): send long parameters in a POST body",
    }


def test_demo_curl_line_answers_0000(served):
    """The seed's example, URL-encoded exactly as `make run` prints it."""
    account = served["account"]
    url = (
        f"{served['base']}/api?key={account['key']}&secret={account['secret']}"
        "&method=v1/completions&_o_args=%7B%22prompt%22%3A%22%E4%B8%AD%E5%9B%BD%E9%98%9F%E4%BB"
        "%80%E4%B9%88%E6%97%B6%E5%80%99%E8%BF%9B%E4%B8%96%E7%95%8C%E6%9D%AF%22%2C%22max_tokens"
        "%22%3A200%7D"
    )
    assert '"error_code":"0000"' in requests.get(url, timeout=10).text


SIGNING_PHP_CLIENT = r"""<?php
[$_, $base, $key, $secret, $count] = $argv;
function onebound_sign(string $secret, array $params): string
{
    unset($params['sign'], $params['secret']);
    ksort($params, SORT_STRING);
    $text = '';
    foreach ($params as $name => $value) {
        $text .= $name . $value;
    }
    return strtoupper(md5($secret . $text . $secret));
}
$codes = [];
for ($i = 0; $i < (int) $count; $i++) {
    $params = [
        'key' => $key,
        'method' => 'v1/chat/completions',
        '_o_args' => json_encode(['messages' => [['role' => 'user', 'content' => "第{$i}个问题"]]],
                                 JSON_UNESCAPED_UNICODE),
        'dateline' => (string) time(),
        'nonce' => bin2hex(random_bytes(8)),
        'result_type' => 'serialize',
        'cache' => 'no',
    ];
    $params['sign'] = onebound_sign($secret, $params);
    $ch = curl_init($base . '/api?' . http_build_query($params, '', '&', PHP_QUERY_RFC3986));
    curl_setopt($ch, CURLOPT_RETURNTRANSFER, true);
    $answer = unserialize(curl_exec($ch), ['allowed_classes' => false]);
    $codes[] = $answer['error_code'] . ' ' . $answer['api_info'];
}
echo implode("\n", $codes);
"""


def test_new_user_spends_a_quota_with_signed_php_calls_tops_up_and_reads_the_report(served):
    """The issue's walk-through: quota from the command line, spent by a PHP client that never
    sends its secret, 4013, a top-up, and the usage report."""
    gateway = served["gateway"]
    account = gateway.flask_json("accounts", "create", "newcomer", "--daily-quota", "2")

    def php_calls(count: int) -> list[str]:
        done = run_php(
            SIGNING_PHP_CLIENT, b"", served["base"], account["key"], account["secret"], str(count)
        )
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode().splitlines()

    assert php_calls(3) == [
        "0000 today:1 max:2 all[1=1+0+0];expires:never",
        "0000 today:2 max:2 all[2=2+0+0];expires:never",
        "4013 today:2 max:2 all[3=2+0+1];expires:never",
    ]
    gateway.flask("accounts", "topup", account["key"], "--calls", "1")
    assert php_calls(1) == ["0000 today:3 max:3 all[4=3+0+1];expires:never"]
    report = gateway.flask_json("usage", account["key"])
    assert {k: report[k] for k in ("calls", "charged", "cache_hits", "by_code")} == {
        "calls": 4,
        "charged": 3,
        "cache_hits": 0,
        "by_code": {"0000": 3, "4013": 1},
    }
