"""The UPSTREAMS_FILE format (docs/upstreams.md): the Upstream a [[upstream]] table makes,
and the checks of each field. The file is checked whole (at startup and at each reload): every
mistake is a ValueError naming the file, the upstream and what to fix, and no message ever
holds an upstream key."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from config import gunicorn_timeout_seconds

# Used when OPENAI_BASE_URL is empty: the bundled stub that `make run` starts.
STUB_BASE_URL = "http://127.0.0.1:8001/v1"
STUB_API_KEY = "sk-stub"

# The SDK resources the catalog calls (warmed up before a worker takes calls).
CATALOG_RESOURCES = (
    "chat",
    "completions",
    "embeddings",
    "moderations",
    "models",
    "images",
    "audio",
    "files",
    "responses",
)

# Names of the upstreams from OPENAI_BASE_URL (or the stub); a file upstream may not take them.
RESERVED_NAMES = frozenset({"default", "stub"})
_NAME = re.compile(r"[a-z0-9_-]+")
# RFC 9110 field-name token.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELDS = (
    "name",
    "base_url",
    "api_key_env",
    "api_key_envs",
    "models",
    "weight",
    "priority",
    "timeout_seconds",
    "max_retries",
    "headers",
    "responses",
)
# How an upstream answers v1/responses: its own /responses, or chat completions translated.
RESPONSES_MODES = ("native", "chat")
_REQUIRED = ("name", "base_url", "models")


@dataclass(frozen=True)
class Upstream:
    name: str
    base_url: str
    api_key: str = field(repr=False)  # never printed: an Upstream may end up in a log line
    timeout_seconds: float
    max_retries: int
    # fnmatch patterns (case-sensitive) of the model names routed here; empty for the default.
    patterns: tuple[str, ...] = ()
    # Extra headers sent with every request to this upstream (never Authorization).
    headers: Mapping[str, str] = field(default_factory=dict, hash=False)
    # A pool picks among its healthy members of the lowest priority, by weight.
    weight: float = 1
    priority: int = 0
    # It speaks chat completions only: v1/responses is translated (handlers/responses_via_chat).
    responses_via_chat: bool = False

    def matches(self, model: str) -> bool:
        return any(fnmatchcase(model, pattern) for pattern in self.patterns)

    def first_match(self, model: str) -> str | None:
        """The first of this member's patterns that matches `model`, or None."""
        return next((p for p in self.patterns if fnmatchcase(model, p)), None)


def load_upstreams_file(
    path: str | os.PathLike,
    *,
    default_timeout_seconds: float,
    default_max_retries: int,
    environ: Mapping[str, str] | None = None,
) -> list[Upstream]:
    """The upstreams of the TOML file at `path`, in file order; ValueError on any mistake."""
    environ = os.environ if environ is None else environ
    where = f"UPSTREAMS_FILE {os.fspath(path)}"
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ValueError(
            f"{where}: cannot be read ({exc.strerror or exc}); "
            "fix the path or leave UPSTREAMS_FILE empty"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{where}: is not valid TOML ({exc})") from None
    unknown = sorted(set(document) - {"upstream"})
    if unknown:
        raise ValueError(
            f"{where}: unknown top-level key {unknown[0]!r}; "
            "the file holds only [[upstream]] tables"
        )
    tables = document.get("upstream", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ValueError(f"{where}: 'upstream' must be written as [[upstream]] tables")
    gunicorn_timeout = gunicorn_timeout_seconds(environ)
    upstreams: list[Upstream] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(tables, start=1):
        members = _parse_upstream(
            table,
            f"{where}: [[upstream]] #{index}",
            environ=environ,
            default_timeout_seconds=default_timeout_seconds,
            default_max_retries=default_max_retries,
            gunicorn_timeout=gunicorn_timeout,
        )
        name = table["name"]
        if name in seen:
            raise ValueError(
                f"{where}: [[upstream]] #{index} name {name!r} is already used by "
                f"[[upstream]] #{seen[name]}; give each upstream its own name"
            )
        seen[name] = index
        upstreams.extend(members)
    return upstreams


def _parse_upstream(
    table: dict,
    where: str,
    *,
    environ: Mapping[str, str],
    default_timeout_seconds: float,
    default_max_retries: int,
    gunicorn_timeout: int,
) -> list[Upstream]:
    """The table's members: one, or one per key of `api_key_envs` (named NAME#1, NAME#2...)."""
    # The name first, so that every later message can say which upstream it is about.
    name = _checked_name(table, where)
    where = f"{where} {name!r}"
    _check_fields(table, where)
    base_url = _checked_base_url(table["base_url"], where)
    api_keys = _checked_api_keys(table, where, environ)
    models = _checked_models(table["models"], where)
    timeout_seconds, max_retries = _checked_time_limits(
        table, where, default_timeout_seconds, default_max_retries, gunicorn_timeout
    )
    weight, priority = _checked_pool_place(table, where)
    headers = _checked_headers(table.get("headers", {}), where)
    via_chat = checked_responses_mode(table.get("responses", "native"), f"{where}: responses")
    return [
        Upstream(
            name=name if "api_key_envs" not in table else f"{name}#{number}",
            base_url=base_url,
            api_key=api_key,
            timeout_seconds=float(timeout_seconds),
            max_retries=max_retries,
            patterns=tuple(models),
            headers=headers,
            weight=weight,
            priority=priority,
            responses_via_chat=via_chat,
        )
        for number, api_key in enumerate(api_keys, start=1)
    ]


def _checked_name(table: dict, where: str) -> str:
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"{where}: name must be a string of a-z, 0-9, '_' and '-', e.g. name = \"qwen\""
        )
    if name in RESERVED_NAMES:
        raise ValueError(
            f"{where}: name {name!r} is reserved for the OPENAI_BASE_URL upstream; pick another"
        )
    return name


def _check_fields(table: dict, where: str) -> None:
    for key in table:
        if key not in _FIELDS:
            hint = (
                "keys are never read from the file: put the key in an environment variable "
                "and name that variable in api_key_env"
                if "key" in key.lower()
                else f"known fields: {', '.join(_FIELDS)}"
            )
            raise ValueError(f"{where}: unknown field {key!r}; {hint}")
    for key in _REQUIRED:
        if key not in table:
            raise ValueError(f"{where}: the required field {key!r} is missing")


def _checked_base_url(base_url, where: str) -> str:
    if not isinstance(base_url, str):
        raise ValueError(f'{where}: base_url must be a string like "https://host/v1"')
    base_url = base_url.strip().rstrip("/")
    parts = urlsplit(base_url)
    if parts.username is not None or parts.password is not None:
        # Not echoed: the user part of a URL is a credential.
        raise ValueError(
            f"{where}: base_url must not carry credentials (user@host); "
            "put the key in an environment variable and name it in api_key_env"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{where}: base_url {base_url!r} must be an http:// or https:// URL with a host, "
            'e.g. "https://api.deepseek.com/v1"'
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{where}: base_url {base_url!r} must not have a query or a fragment")
    try:
        parts.port  # noqa: B018 -- raises on a port that is not a number in range
    except ValueError:
        raise ValueError(f"{where}: base_url {base_url!r} has an invalid port") from None
    return base_url


def _checked_api_keys(table: dict, where: str, environ: Mapping[str, str]) -> list[str]:
    """The keys named by api_key_env (one) or api_key_envs (one member per key)."""
    if "api_key_env" not in table and "api_key_envs" not in table:
        raise ValueError(f"{where}: the required field 'api_key_env' is missing")
    if "api_key_env" in table and "api_key_envs" in table:
        raise ValueError(
            f"{where}: give api_key_env (one key) or api_key_envs (one member per key, "
            'e.g. api_key_envs = ["KEY_A", "KEY_B"]), not both'
        )
    if "api_key_env" in table:
        return [_checked_api_key(table["api_key_env"], where, environ)]
    names = table["api_key_envs"]
    if not isinstance(names, list) or not names or len(set(map(str, names))) != len(names):
        raise ValueError(
            f"{where}: api_key_envs must be a non-empty list of distinct environment "
            'variable names, e.g. api_key_envs = ["KEY_A", "KEY_B"]'
        )
    return [_checked_api_key(name, where, environ) for name in names]


def checked_responses_mode(mode, where: str) -> bool:
    """Whether v1/responses is translated to chat completions for this upstream."""
    if mode not in RESPONSES_MODES:
        raise ValueError(
            f'{where} must be "native" (the upstream serves /responses) or "chat" (it '
            "speaks chat completions only: text responses are translated)"
        )
    return mode == "chat"


def _checked_pool_place(table: dict, where: str) -> tuple[float, int]:
    """(weight, priority): how often the member is picked among its peers, and its tier."""
    weight = table.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
        raise ValueError(f"{where}: weight must be a number above 0, e.g. weight = 2")
    priority = table.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError(
            f"{where}: priority must be a whole number (lower is tried first), e.g. priority = 1"
        )
    return weight, priority


def _checked_api_key(api_key_env, where: str, environ: Mapping[str, str]) -> str:
    if not isinstance(api_key_env, str) or not api_key_env.strip():
        raise ValueError(
            f"{where}: api_key_env must be the name of an environment variable, "
            'e.g. api_key_env = "DASHSCOPE_API_KEY"'
        )
    api_key = environ.get(api_key_env, "").strip()
    if not api_key:
        raise ValueError(
            f"{where}: the environment variable {api_key_env} named by api_key_env is unset "
            "or empty; export the upstream's key in it (any non-empty value for a local "
            "server that checks none)"
        )
    return api_key


def _checked_models(models, where: str) -> list[str]:
    if (
        not isinstance(models, list)
        or not models
        or not all(isinstance(p, str) and p.strip() for p in models)
    ):
        raise ValueError(
            f"{where}: models must be a non-empty list of model-name patterns, "
            'e.g. models = ["qwen-*"]'
        )
    return models


def _checked_time_limits(
    table: dict,
    where: str,
    default_timeout_seconds: float,
    default_max_retries: int,
    gunicorn_timeout: int,
) -> tuple[float, int]:
    """(timeout_seconds, max_retries), whose worst case stays below the gunicorn timeout."""
    timeout_seconds = table.get("timeout_seconds", default_timeout_seconds)
    if (
        isinstance(timeout_seconds, bool)
        or not isinstance(timeout_seconds, int | float)
        or not timeout_seconds > 0
    ):
        raise ValueError(f"{where}: timeout_seconds must be a number of seconds above 0")
    max_retries = table.get("max_retries", default_max_retries)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"{where}: max_retries must be a whole number, 0 or more")
    worst_case = float(timeout_seconds) * (1 + max_retries)
    if worst_case >= gunicorn_timeout:
        raise ValueError(
            f"{where}: timeout_seconds x attempts = {timeout_seconds:g}s x {1 + max_retries} "
            f"= {worst_case:g}s must stay below the gunicorn timeout ({gunicorn_timeout}s); "
            "lower timeout_seconds or max_retries, or raise GUNICORN_TIMEOUT"
        )
    return timeout_seconds, max_retries


def _checked_headers(headers, where: str) -> dict:
    if not isinstance(headers, dict):
        raise ValueError(
            f'{where}: headers must be a table of strings, e.g. headers = {{ "X-A" = "b" }}'
        )
    for header, value in headers.items():
        if not _HEADER_NAME.fullmatch(header):
            raise ValueError(f"{where}: headers: {header!r} is not a valid header name")
        if header.lower() == "authorization":
            raise ValueError(
                f"{where}: headers may not set Authorization; the key comes from api_key_env"
            )
        # The value is not echoed: a header may carry a secret of its own.
        if not isinstance(value, str) or "\r" in value or "\n" in value or "\0" in value:
            raise ValueError(f"{where}: headers: the value of {header!r} must be a one-line string")
    return dict(headers)
