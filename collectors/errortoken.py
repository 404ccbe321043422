"""ErrorToken: the closed vocabulary of API errors (seed 004 §0, §4).

Over quota the answer is BACKPRESSURE or RATE_LIMIT with `retry_after_ms` (and `Retry-After`
in whole seconds, rounded up). The envelope never carries a message or a stack trace.
"""

from __future__ import annotations

import json
import math

from vigia.model import Catalog


class ApiError(Exception):
    def __init__(self, token: str, retry_after_ms: int | None = None):
        super().__init__(token)
        self.token = token
        self.retry_after_ms = retry_after_ms


class ErrorTokens:
    """The catalog's vocabulary: status codes and which tokens must carry retry_after_ms."""

    def __init__(self, catalog: Catalog):
        self._specs = catalog.error_tokens

    def check(self, error: ApiError) -> None:
        spec = self._specs.get(error.token)
        if spec is None:
            raise ValueError(f"{error.token!r} is not in the catalog's ErrorToken vocabulary")
        if spec.retry_after and (error.retry_after_ms is None or error.retry_after_ms < 0):
            raise ValueError(f"{error.token} needs retry_after_ms >= 0")

    def status(self, token: str) -> int:
        return self._specs[token].status

    def token_for(self, status: int) -> str:
        """The vocabulary's token for an HTTP status the framework chose (404, 405, 413, ...).

        The token with exactly that status, else the class's general one: INVALID_ARGUMENT for a
        4xx, INTERNAL for anything else.
        """
        exact = sorted(token for token, spec in self._specs.items() if spec.status == status)
        if exact:
            return exact[0]
        return "INVALID_ARGUMENT" if 400 <= status < 500 and "INVALID_ARGUMENT" in self._specs else "INTERNAL"

    def response(self, error: ApiError, correlation_id: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """(status, headers, body) of the JSON envelope for an error."""
        self.check(error)
        body: dict = {"token": error.token, "correlation_id": correlation_id}
        headers = [(b"content-type", b"application/json")]
        if error.retry_after_ms is not None:
            body["retry_after_ms"] = int(error.retry_after_ms)
            headers.append((b"retry-after", str(max(1, math.ceil(error.retry_after_ms / 1000))).encode()))
        return self.status(error.token), headers, json.dumps({"error": body}, separators=(",", ":")).encode()
