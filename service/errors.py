"""Errors that map to HTTP statuses. Every one is rendered as {"error": "..."}.

Plain `ValueError` (including codec.CodecError and pydantic's ValidationError) raised while
decoding a request means "bad input" and becomes a 400; see app.install_error_handlers.
"""
from __future__ import annotations

from typing import Optional


class ServiceError(Exception):
    def __init__(self, status: int, message: str, headers: Optional[dict[str, str]] = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def not_found(what: str, choices) -> ServiceError:
    return ServiceError(404, f"unknown {what}; expected one of {sorted(choices)}")


def unavailable(message: str, retry_after_s: int = 1) -> ServiceError:
    return ServiceError(503, message, {"Retry-After": str(retry_after_s)})
