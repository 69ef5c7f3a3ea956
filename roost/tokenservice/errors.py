"""Client and remote API errors in the panel's shape (pure; the app turns them into responses).

`{"errors":[{"code":"<exception name>","status":"<status as string>","detail":"<message>"}]}`,
with the exception names and texts a Pterodactyl panel answers with, so wrappers that match on
them behave the same. Validation errors carry one entry per field, each with
`meta.source_field` and `meta.rule`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .nodeclient import NodeError

NOT_FOUND_TEXT = "The requested resource could not be found on the server."
UNAUTHENTICATED_TEXT = "Unauthenticated."
UNAUTHORIZED_TEXT = "This action is unauthorized."
WEBSOCKET_FORBIDDEN_TEXT = "You do not have permission to connect to this server's websocket."
TRANSFER_LOGS_FORBIDDEN_TEXT = "You do not have permission to view server transfer logs."
COMMAND_OFFLINE_TEXT = "Server must be online in order to send commands."
NODE_UNREACHABLE_TEXT = "Could not establish a connection to the machine running this server. Please try again."
INTERNAL_TEXT = "An unexpected error was encountered while processing this request, please try again."
REMOTE_NO_AUTH_TEXT = "Access to this endpoint must include an Authorization header."
REMOTE_BAD_AUTH_FORMAT_TEXT = "The Authorization header provided was not in a valid format."
REMOTE_FORBIDDEN_TEXT = "You are not authorized to access this resource."


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}

    def document(self) -> dict[str, Any]:
        return {"errors": [{"code": self.code, "status": str(self.status), "detail": self.detail}]}


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    rule: str
    detail: str


class ValidationFailed(ApiError):
    """422: one entry per field that failed (the first rule it failed)."""

    def __init__(self, fields: list[FieldError]):
        super().__init__(422, "ValidationException", fields[0].detail if fields else "The given data was invalid.")
        self.fields = fields

    def document(self) -> dict[str, Any]:
        return {"errors": [
            {"code": "ValidationException", "status": "422", "detail": f.detail,
             "meta": {"source_field": f.field, "rule": f.rule}}
            for f in self.fields
        ]}


def unauthenticated() -> ApiError:
    return ApiError(401, "AuthenticationException", UNAUTHENTICATED_TEXT)


def not_found(detail: str = NOT_FOUND_TEXT) -> ApiError:
    return ApiError(404, "NotFoundHttpException", detail)


def access_denied(detail: str = UNAUTHORIZED_TEXT) -> ApiError:
    return ApiError(403, "AccessDeniedHttpException", detail)


def forbidden(detail: str) -> ApiError:
    return ApiError(403, "HttpForbiddenException", detail)


def state_conflict(detail: str) -> ApiError:
    return ApiError(409, "ServerStateConflictException", detail)


def method_not_allowed(method: str, allowed: list[str]) -> ApiError:
    supported = ", ".join(sorted(allowed))
    return ApiError(405, "MethodNotAllowedHttpException",
                    f"The {method} method is not supported for this route. Supported methods: {supported}.",
                    headers={"Allow": supported})


def too_large() -> ApiError:
    return ApiError(413, "PostTooLargeException", "The request body is too large.")


def internal() -> ApiError:
    return ApiError(500, "HttpException", INTERNAL_TEXT)


def command_offline() -> ApiError:
    return ApiError(502, "HttpException", COMMAND_OFFLINE_TEXT)


def daemon_error(e: NodeError) -> ApiError:
    """A failed node call, as the panel reports it (DaemonConnectionException)."""
    rid = e.request_id or "<nil>"
    if e.status is None:
        return ApiError(504, "DaemonConnectionException", NODE_UNREACHABLE_TEXT)
    if e.status < 500:
        message = e.error or (f"There was an error while communicating with the machine running this server. "
                              f"(code: {e.status})")
        return ApiError(e.status, "DaemonConnectionException",
                        f"An error occurred on the remote host: {message}. (request id: {rid})")
    return ApiError(e.status, "DaemonConnectionException",
                    "There was an error while communicating with the machine running this server. This error has "
                    f"been logged, please try again. (code: {e.status}) (request_id: {rid})")


def remote_no_auth() -> ApiError:
    return ApiError(401, "HttpException", REMOTE_NO_AUTH_TEXT, headers={"WWW-Authenticate": "Bearer"})


def remote_bad_auth_format() -> ApiError:
    return ApiError(400, "BadRequestHttpException", REMOTE_BAD_AUTH_FORMAT_TEXT)


def remote_forbidden() -> ApiError:
    return ApiError(403, "AccessDeniedHttpException", REMOTE_FORBIDDEN_TEXT)


# ---- field rules (Laravel's wording, as the panel answers) -------------------------------------


def required(field: str) -> FieldError:
    return FieldError(field, "required", f"The {field} field is required.")


def must_be_string(field: str) -> FieldError:
    return FieldError(field, "string", f"The {field} must be a string.")


def must_be_integer(field: str) -> FieldError:
    return FieldError(field, "integer", f"The {field} must be an integer.")


def must_be_at_least(field: str, minimum: int) -> FieldError:
    return FieldError(field, "min", f"The {field} must be at least {minimum}.")


def must_be_boolean(field: str) -> FieldError:
    return FieldError(field, "boolean", f"The {field} field must be true or false.")


def must_be_present(field: str) -> FieldError:
    return FieldError(field, "present", f"The {field} field must be present.")


def must_be_array(field: str) -> FieldError:
    return FieldError(field, "array", f"The {field} must be an array.")


def invalid_choice(field: str) -> FieldError:
    return FieldError(field, "in", f"The selected {field} is invalid.")
