"""config/: the gunicorn timeout rule, computed where the other settings are (pure logic)."""

from __future__ import annotations

import pytest

from config import checked_gunicorn_timeout


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in (
        "GUNICORN_TIMEOUT",
        "UPSTREAM_TIMEOUT_SECONDS",
        "UPSTREAM_MAX_RETRIES",
        "UPSTREAM_DEADLINE_SECONDS",
    ):
        monkeypatch.delenv(name, raising=False)


def test_gunicorn_timeout_defaults_to_90_seconds():
    assert checked_gunicorn_timeout() == 90


def test_gunicorn_timeout_is_gunicorn_timeout_when_set(monkeypatch):
    monkeypatch.setenv("GUNICORN_TIMEOUT", "120")
    assert checked_gunicorn_timeout() == 120


def test_upstream_timeout_x_attempts_at_the_gunicorn_timeout_is_refused(monkeypatch):
    monkeypatch.setenv("UPSTREAM_TIMEOUT_SECONDS", "45")  # 45 s x 2 attempts = 90 s
    with pytest.raises(ValueError) as refused:
        checked_gunicorn_timeout()
    assert str(refused.value) == (
        "UPSTREAM_TIMEOUT_SECONDS x attempts = 90s must stay below the gunicorn timeout (90s); "
        "lower the upstream timeout or raise GUNICORN_TIMEOUT"
    )


def test_a_gunicorn_timeout_that_is_not_a_number_names_the_variable(monkeypatch):
    monkeypatch.setenv("GUNICORN_TIMEOUT", "ninety")
    with pytest.raises(ValueError, match="GUNICORN_TIMEOUT='ninety' is not a whole number"):
        checked_gunicorn_timeout()


def test_a_failover_deadline_at_the_gunicorn_timeout_is_refused(monkeypatch):
    monkeypatch.setenv("UPSTREAM_DEADLINE_SECONDS", "90")
    with pytest.raises(ValueError) as refused:
        checked_gunicorn_timeout()
    assert str(refused.value) == (
        "UPSTREAM_DEADLINE_SECONDS=90 (all of a call's failover attempts) must be above 0 and "
        "below the gunicorn timeout (90s); lower it or raise GUNICORN_TIMEOUT"
    )
