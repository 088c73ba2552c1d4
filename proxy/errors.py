"""The onebound error-code table and the exception that carries a code through the gateway.

Pure: imports nothing from proxy, nothing from Flask.
"""

from __future__ import annotations

from dataclasses import dataclass

LANGUAGES = ("cn", "en", "ru")
DEFAULT_LANGUAGE = "cn"


@dataclass(frozen=True)
class ErrorCode:
    code: str  # always a string: legacy clients compare "0000", not 0
    # The HTTP status of an OpenAI-door answer with this code (the SDK raises by status);
    # /api answers are always 200. GatewayError.http_status overrides it for one failure.
    http_status: int
    word: str  # short machine word for the envelope's `error` field ("" on success)
    charged: bool
    cn: str
    en: str
    ru: str

    def text(self, lang: str) -> str:
        return getattr(self, lang if lang in LANGUAGES else DEFAULT_LANGUAGE)


_TABLE = (
    ErrorCode("0000", 200, "", True, "接口调用成功并返回相关数据", "success", "успешно"),
    ErrorCode(
        "2000",
        200,
        "",
        True,
        "接口访问成功,但是搜索没有结果",
        "Search success but no result",
        "Запрос выполнен, но результатов нет",
    ),
    ErrorCode(
        "4000",
        500,
        "internal_error",
        False,
        "服务器内部错误",
        "Server internal error",
        "Внутренняя ошибка сервера",
    ),
    ErrorCode("4001", 502, "network_error", False, "网络错误", "Network error", "Ошибка сети"),
    ErrorCode(
        "4002",
        502,
        "target_server_error",
        False,
        "目标服务器错误",
        "Target server error",
        "Ошибка целевого сервера",
    ),
    ErrorCode(
        "4003",
        400,
        "param_error",
        False,
        "用户输入参数错误",
        "Param error",
        "Ошибка в параметрах запроса",
    ),
    ErrorCode(
        "4004",
        401,
        "account_not_found",
        False,
        "用户帐号不存在",
        "Account not found",
        "Учётная запись не найдена",
    ),
    ErrorCode(
        "4005",
        401,
        "auth_failed",
        False,
        "授权失败",
        "Invalid authentication credentials",
        "Неверные учётные данные",
    ),
    ErrorCode(
        "4006", 403, "api_stopped", False, "您的当前API已停用", "API stopped", "API остановлен"
    ),
    ErrorCode(
        "4007",
        403,
        "account_stopped",
        False,
        "您的账户已停用",
        "Account stopped",
        "Учётная запись остановлена",
    ),
    ErrorCode(
        "4008",
        429,
        "rate_limit",
        False,
        "并发已达上限",
        "API rate limit exceeded",
        "Превышен лимит одновременных запросов",
    ),
    ErrorCode(
        "4009", 503, "api_maintenance", False, "API维护中", "API maintenance", "API на обслуживании"
    ),
    ErrorCode(
        "4010",
        404,
        "api_not_found",
        False,
        "API不存在",
        "API not found with these values",
        "API с такими параметрами не найден",
    ),
    ErrorCode(
        "4012",
        403,
        "api_not_added",
        False,
        "请先添加api",
        "Please add api first",
        "Сначала подключите API",
    ),
    ErrorCode(
        "4013",
        429,
        "calls_exceeded",
        False,
        "调用次数超限",
        "Number of calls exceeded",
        "Превышено число вызовов",
    ),
    ErrorCode(
        "4014",
        400,
        "missing_param",
        False,
        "参数缺失",
        "Missing url param",
        "Отсутствует параметр запроса",
    ),
    ErrorCode(
        "4015",
        400,
        "wrong_page_token",
        False,
        "参数pageToken有误",
        "Wrong pageToken",
        "Неверный pageToken",
    ),
    ErrorCode(
        "4016",
        429,
        "insufficient_balance",
        False,
        "余额不足",
        "Insufficient balance",
        "Недостаточно средств",
    ),
    ErrorCode(
        "4017", 504, "timeout", False, "请求超时", "timeout error", "Превышено время ожидания"
    ),
    ErrorCode(
        "5000", 500, "unknown_error", False, "未知错误", "unknown error", "Неизвестная ошибка"
    ),
)

ERROR_CODES: dict[str, ErrorCode] = {entry.code: entry for entry in _TABLE}

SUCCESS = "0000"
NO_RESULT = "2000"
INTERNAL_ERROR = "4000"
NETWORK_ERROR = "4001"
TARGET_SERVER_ERROR = "4002"
PARAM_ERROR = "4003"
ACCOUNT_NOT_FOUND = "4004"
AUTH_FAILED = "4005"
API_STOPPED = "4006"
ACCOUNT_STOPPED = "4007"
RATE_LIMITED = "4008"
API_MAINTENANCE = "4009"
API_NOT_FOUND = "4010"
API_NOT_ADDED = "4012"
CALLS_EXCEEDED = "4013"
MISSING_PARAM = "4014"
WRONG_PAGE_TOKEN = "4015"
INSUFFICIENT_BALANCE = "4016"
TIMEOUT = "4017"
UNKNOWN_ERROR = "5000"

# The upstream answered: with a result (0000) or with an empty one (2000).
ANSWERED_CODES = frozenset({SUCCESS, NO_RESULT})


def reason_text(code: str, lang: str, detail: str = "") -> str:
    """The envelope's `reason`: the table text in `lang`, then what to fix (details are English)."""
    text = ERROR_CODES[code].text(lang)
    if not detail:
        return "" if code == SUCCESS else text
    return f"{text}: {detail}"


class GatewayError(Exception):
    """A failure with an error code from the table.

    `detail` says what to fix and must never contain a key, secret or sign.
    `response` is what goes into the envelope's `response` (e.g. the upstream's error object).
    `http_status` overrides the code's usual HTTP status on the OpenAI-compatible door (e.g.
    401 for a missing API key, which the table's 4014 makes 400; 404 for a file id that is not
    the caller's); /api answers are always 200. `upstream_status`: the HTTP status of an
    upstream refusal. `retry_after_seconds`: when a per-minute limit frees (Retry-After).
    """

    def __init__(
        self,
        code: str,
        detail: str = "",
        response=None,
        *,
        http_status: int | None = None,
        upstream_status: int | None = None,
        retry_after_seconds: int | None = None,
    ):
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(f"{code} {detail}".strip())
        self.code = code
        self.detail = detail
        self.response = response if response is not None else []
        self.http_status = http_status
        self.upstream_status = upstream_status
        self.retry_after_seconds = retry_after_seconds  # Retry-After on /v1 (4008)
