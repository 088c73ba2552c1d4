"""Secrets sealed at rest (proxy/sealing.py): Fernet under a key kept outside the database."""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading

import pytest
from cryptography.fernet import Fernet

from proxy import sealing
from proxy.sealing import KEY_FILE_NAME, SealError, SecretSealer

SECRET = "0123456789abcdef0123456789abcdef"
WORKERS = 8


def test_a_sealed_secret_unseals_to_itself():
    sealer = SecretSealer(Fernet.generate_key())
    assert sealer.unseal(sealer.seal(SECRET)) == SECRET


def test_a_non_ascii_secret_round_trips():
    sealer = SecretSealer(Fernet.generate_key())
    assert sealer.unseal(sealer.seal("秘密 😀")) == "秘密 😀"


def test_a_seal_is_an_ascii_token_that_does_not_contain_the_secret():
    token = SecretSealer(Fernet.generate_key()).seal(SECRET)
    assert token.isascii() and SECRET not in token


def test_sealing_twice_gives_different_tokens():
    sealer = SecretSealer(Fernet.generate_key())
    assert sealer.seal(SECRET) != sealer.seal(SECRET)


def test_a_token_sealed_under_another_key_raises_seal_error():
    token = SecretSealer(Fernet.generate_key()).seal(SECRET)
    with pytest.raises(SealError):
        SecretSealer(Fernet.generate_key()).unseal(token)


def test_a_tampered_token_raises_seal_error():
    sealer = SecretSealer(Fernet.generate_key())
    token = sealer.seal(SECRET)
    middle = len(token) // 2
    tampered = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    with pytest.raises(SealError):
        sealer.unseal(tampered)


@pytest.mark.parametrize("token", ["", "not a token", "gAAAAAB\u00e9"])
def test_garbage_and_non_ascii_tokens_raise_seal_error(token):
    with pytest.raises(SealError):
        SecretSealer(Fernet.generate_key()).unseal(token)


def test_seal_error_does_not_repeat_the_token():
    token = SecretSealer(Fernet.generate_key()).seal(SECRET)
    with pytest.raises(SealError) as caught:
        SecretSealer(Fernet.generate_key()).unseal(token)
    assert token not in str(caught.value)


def test_a_configured_key_is_used_as_is_and_no_key_file_is_made(tmp_path):
    key = Fernet.generate_key()
    sealer = SecretSealer.from_config(key.decode(), str(tmp_path))
    assert sealer.unseal(Fernet(key).encrypt(b"abc").decode()) == "abc"
    assert os.listdir(tmp_path) == []


def test_a_configured_key_with_a_trailing_newline_is_accepted(tmp_path):
    key = Fernet.generate_key()
    sealer = SecretSealer.from_config(key.decode() + "\n", str(tmp_path))
    assert sealer.unseal(Fernet(key).encrypt(b"abc").decode()) == "abc"


@pytest.mark.parametrize(
    "bad",
    ["not-a-fernet-key-but-long-enough-to-be-a-password", "c2hvcnQ=", "   ", "ключ"],
)
def test_an_invalid_configured_key_is_a_value_error_that_says_how_to_make_one(tmp_path, bad):
    with pytest.raises(ValueError) as caught:
        SecretSealer.from_config(bad, str(tmp_path))
    message = str(caught.value)
    assert bad not in message
    assert message.startswith("ACCOUNT_SEALING_KEY is not a Fernet key")
    assert (
        'python -c "from cryptography.fernet import Fernet; '
        'print(Fernet.generate_key().decode())"' in message
    )


def test_an_empty_configured_key_creates_a_0600_key_file(tmp_path):
    SecretSealer.from_config("", str(tmp_path))
    path = tmp_path / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == [KEY_FILE_NAME]
    SecretSealer(path.read_bytes().strip())  # holds a valid Fernet key


def test_a_second_sealer_reads_the_same_key_file(tmp_path):
    first = SecretSealer.from_config("", str(tmp_path))
    second = SecretSealer.from_config("", str(tmp_path))
    assert second.unseal(first.seal(SECRET)) == SECRET


def test_an_existing_key_file_is_used(tmp_path):
    key = Fernet.generate_key()
    (tmp_path / KEY_FILE_NAME).write_bytes(key + b"\n")
    sealer = SecretSealer.from_config("", str(tmp_path))
    assert sealer.unseal(Fernet(key).encrypt(b"abc").decode()) == "abc"


def test_a_missing_instance_path_is_created(tmp_path):
    instance = tmp_path / "not" / "yet"
    SecretSealer.from_config("", str(instance))
    assert os.listdir(instance) == [KEY_FILE_NAME]


def test_a_key_file_without_a_key_is_a_value_error_that_does_not_repeat_it(tmp_path):
    (tmp_path / KEY_FILE_NAME).write_text("hunter2-not-a-key\n")
    with pytest.raises(ValueError) as caught:
        SecretSealer.from_config("", str(tmp_path))
    assert "does not hold a Fernet key" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_a_process_that_loses_the_creation_race_uses_the_winners_key(tmp_path, monkeypatch):
    winner = Fernet.generate_key()
    real_link = os.link

    def link_after_another_process_won(source, destination):
        with open(destination, "xb") as handle:
            handle.write(winner + b"\n")
        real_link(source, destination)

    monkeypatch.setattr(sealing.os, "link", link_after_another_process_won)
    sealer = SecretSealer.from_config("", str(tmp_path))
    assert sealer.unseal(Fernet(winner).encrypt(b"abc").decode()) == "abc"
    assert os.listdir(tmp_path) == [KEY_FILE_NAME]  # the loser's temp file is gone


def _seal_after_start(instance_path: str, start, results) -> None:
    start.wait(30)
    results.put(SecretSealer.from_config("", instance_path).seal(SECRET))


def test_processes_starting_at_once_all_end_with_the_same_key(tmp_path):
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    processes = [
        context.Process(target=_seal_after_start, args=(str(tmp_path), start, results))
        for _ in range(WORKERS)
    ]
    for process in processes:
        process.start()
    start.set()
    tokens = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(30)
    assert [process.exitcode for process in processes] == [0] * WORKERS
    final = SecretSealer.from_config("", str(tmp_path))
    assert [final.unseal(token) for token in tokens] == [SECRET] * WORKERS
    assert os.listdir(tmp_path) == [KEY_FILE_NAME]


def test_threads_starting_at_once_all_end_with_the_same_key(tmp_path):
    barrier = threading.Barrier(WORKERS)
    tokens: list[str] = []

    def seal_at_once():
        barrier.wait(30)
        tokens.append(SecretSealer.from_config("", str(tmp_path)).seal(SECRET))

    threads = [threading.Thread(target=seal_at_once) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    final = SecretSealer.from_config("", str(tmp_path))
    assert [final.unseal(token) for token in tokens] == [SECRET] * WORKERS
    assert os.listdir(tmp_path) == [KEY_FILE_NAME]
