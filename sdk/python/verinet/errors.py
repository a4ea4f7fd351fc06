"""Typed exceptions. Every error a node answers becomes a :class:`VerinetError` subclass that
keeps the node's HTTP status, its stable ``code`` and its message (docs/api.md "Error codes")."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Type


class VerinetError(Exception):
    """An error from a node (``status`` and ``code`` as the node sent them) or from the SDK
    itself (``status`` is ``None`` then, and ``code`` says what happened)."""

    def __init__(
        self,
        status: Optional[int],
        code: str,
        message: str,
        *,
        kind: str = "",
        body: Any = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        super().__init__(f"{status if status is not None else '-'} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        #: OpenAI's error class the node named (``invalid_request_error`` ...), if any.
        self.type = kind
        #: The decoded JSON error body (or the text) the node answered.
        self.body = body
        self.headers: Dict[str, str] = dict(headers or {})


class ConnectionFailed(VerinetError):
    """The node could not be reached (refused, timed out, DNS)."""


class InvalidInput(VerinetError):
    """The request was refused as malformed or not fitting: bad JSON or tensors, a bad model
    reference, inputs that do not fit the model's signature, bad metadata, amounts, addresses
    or uploads (400, 413, 422)."""


class ExecutionFailed(VerinetError):
    """The model failed on these inputs (422 ``execution_failed``)."""


class AuthenticationError(VerinetError):
    """A signature, its timestamp or a node message did not check out (401)."""


class PermissionDenied(VerinetError):
    """The name belongs to someone else, or the faucet is off (403)."""


class NotFound(VerinetError):
    """Unknown model, version, blob, app, receipt or route (404, 410)."""


class ReceiptPending(NotFound):
    """The receipt is not sealed in a batch yet (404 ``receipt_pending``); ask again later."""


class Conflict(VerinetError):
    """Already exists or already used: ``version_exists``, ``app_exists``, ``nonce_used`` (for a
    session), ``node_conflict``, ``payment_in_flight`` (409)."""


class PaymentRequired(VerinetError):
    """Payment was needed or refused (402). ``amount`` is what the node asks (base units) and
    ``requirements`` the decoded ``PAYMENT-REQUIRED`` header, when it sent one."""

    def __init__(self, *args: Any, amount: Optional[int] = None, requirements: Any = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.amount = amount
        self.requirements = requirements


class InsufficientFunds(PaymentRequired):
    """The payer's balance is below the price (402 ``insufficient_funds``)."""


class BudgetExceeded(PaymentRequired):
    """A spending session's cap, expiry or model list does not cover the call (402
    ``budget_exceeded``)."""


class SessionInvalid(PaymentRequired, AuthenticationError):
    """The bearer token is not a session the node knows (401 ``session_invalid``)."""


class SpendLimitExceeded(PaymentRequired):
    """The SDK refused to pay: the amount would take the client's total spend over its
    ``spend_limit``. Nothing was signed. ``spent`` and ``limit`` are base units."""

    def __init__(self, message: str, *, amount: int, spent: int, limit: int, requirements: Any = None) -> None:
        super().__init__(402, "spend_limit_exceeded", message, amount=amount, requirements=requirements)
        self.spent = spent
        self.limit = limit


class Unavailable(VerinetError):
    """The node or its workers could not take the call now: ``overloaded``, ``busy``,
    ``no_workers``, ``no_quorum``, ``workers_failed``, ``timeout`` (502, 503, 504, 408).
    ``retry_after`` is the node's ``Retry-After`` in seconds, when it sent one."""

    @property
    def retry_after(self) -> Optional[float]:
        v = self.headers.get("retry-after")
        try:
            return float(v) if v is not None else None
        except ValueError:
            return None


class ServerError(VerinetError):
    """The node failed (500 ``internal``); details are in its log only."""


class VerificationFailed(VerinetError):
    """An offline check failed (a receipt or an inclusion proof); ``result`` holds every check."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(None, "verification_failed", message)
        self.result = result


_BY_CODE: Dict[str, Type[VerinetError]] = {
    # 400 / 413 / 422: the request itself
    "invalid_json": InvalidInput,
    "invalid_model_ref": InvalidInput,
    "bad_upload": InvalidInput,
    "empty_model": InvalidInput,
    "upload_interrupted": InvalidInput,
    "payload_too_large": InvalidInput,
    "model_too_large": InvalidInput,
    "invalid_metadata": InvalidInput,
    "sha256_mismatch": InvalidInput,
    "invalid_model": InvalidInput,
    "input_mismatch": InvalidInput,
    "invalid_address": InvalidInput,
    "invalid_amount": InvalidInput,
    "execution_failed": ExecutionFailed,
    # 401
    "bad_signature": AuthenticationError,
    "stale_signature": AuthenticationError,
    "unauthenticated": AuthenticationError,
    "session_invalid": SessionInvalid,
    # 403
    "not_owner": PermissionDenied,
    "faucet_disabled": PermissionDenied,
    # 404 / 410
    "not_found": NotFound,
    "unknown_app": NotFound,
    "receipt_pending": ReceiptPending,
    "receipt_pruned": NotFound,
    # 409
    "version_exists": Conflict,
    "app_exists": Conflict,
    "node_conflict": Conflict,
    "payment_in_flight": Conflict,
    # 402
    "insufficient_funds": InsufficientFunds,
    "budget_exceeded": BudgetExceeded,
    # 5xx
    "overloaded": Unavailable,
    "busy": Unavailable,
    "no_workers": Unavailable,
    "no_quorum": Unavailable,
    "workers_failed": Unavailable,
    "timeout": Unavailable,
    "internal": ServerError,
}

_BY_STATUS: Dict[int, Type[VerinetError]] = {
    400: InvalidInput,
    401: AuthenticationError,
    402: PaymentRequired,
    403: PermissionDenied,
    404: NotFound,
    408: Unavailable,
    409: Conflict,
    410: NotFound,
    413: InvalidInput,
    422: InvalidInput,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def error_class(status: int, code: str) -> Type[VerinetError]:
    """The exception class for a node's (status, code)."""
    cls = _BY_CODE.get(code)
    if cls is None:
        if status == 402:
            return PaymentRequired
        cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else VerinetError
    # A 402 code the table files elsewhere (nonce_used is a 409 for sessions, a 402 for x402)
    # is still a payment refusal.
    if status == 402 and not issubclass(cls, PaymentRequired):
        return PaymentRequired
    if status == 409 and cls is PaymentRequired:
        return Conflict
    return cls
