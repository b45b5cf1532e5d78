"""The REST API over httpx, with every failure turned into a CliError carrying a sentence for
people and the exit code scripts branch on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import httpx

from campaigns.cli import (
    EXIT_AUTH,
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_NOT_FOUND,
)

API = "/api/v1"
UPLOAD_CHUNK = 256 * 1024
STATUS_EXIT = {
    400: EXIT_INVALID,
    401: EXIT_AUTH,
    403: EXIT_AUTH,
    404: EXIT_NOT_FOUND,
    405: EXIT_ERROR,
    409: EXIT_INVALID,
    413: EXIT_INVALID,
    415: EXIT_INVALID,
    422: EXIT_INVALID,
}


class CliError(Exception):
    """A failure to report: `message` for people, `exit_code` for scripts, and the server's
    error body (code, message, fields) when there was one."""

    def __init__(
        self,
        message: str,
        exit_code: int = EXIT_ERROR,
        *,
        code: str = "error",
        fields: dict[str, list[str]] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.code = code
        self.fields = fields or {}
        self.status = status

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            body["fields"] = self.fields
        if self.status is not None:
            body["status"] = self.status
        body["exit_code"] = self.exit_code
        return {"error": body}


def error_from_response(response: httpx.Response) -> CliError:
    status = response.status_code
    exit_code = STATUS_EXIT.get(status, EXIT_ERROR)
    code, message, fields = "http_error", "", None
    try:
        body = response.json()
        error = body["error"]
        code, message, fields = str(error["code"]), str(error["message"]), error.get("fields")
    except (ValueError, KeyError, TypeError):
        reason = response.reason_phrase or "error"
        message = f"the server answered HTTP {status} {reason}"
    if status == 401:
        message = f"{message.rstrip('.')}. Check the token (ccgsc login --server URL --token T)."
    return CliError(message, exit_code, code=code, fields=fields, status=status)


def file_chunks(stream: IO[bytes], size: int = UPLOAD_CHUNK) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk


class Api:
    """A logged-in connection to one server."""

    def __init__(self, server: str, token: str | None, *, timeout: float = 60.0) -> None:
        if not server.startswith(("http://", "https://")):
            raise CliError(
                f"the server URL {server!r} must start with http:// or https://", EXIT_INVALID
            )
        self.server = server.rstrip("/")
        headers = {"User-Agent": "ccgsc-cli", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # Uploads and downloads may be large: no write/read deadline on the whole transfer,
        # only on each network step.
        self.http = httpx.Client(
            base_url=self.server + API,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            follow_redirects=False,
        )

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise error_from_response(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(
                f"the server's answer to {method} {path} is not JSON (is {self.server} a CCGSC "
                "server?)"
            ) from None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v})

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def post_file(self, path: str, file_path: str, content_type: str, **params: Any) -> Any:
        """POST a local file as the raw body, streamed from disk."""
        size = os.path.getsize(file_path)
        with open(file_path, "rb") as f:
            return self.post(
                path,
                content=file_chunks(f),
                headers={"Content-Type": content_type, "Content-Length": str(size)},
                params={k: v for k, v in params.items() if v},
            )

    @contextmanager
    def stream(self, path: str, **params: Any) -> Iterator[httpx.Response]:
        try:
            with self.http.stream("GET", path, params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                yield response
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: httpx.HTTPError) -> CliError:
        if isinstance(exc, httpx.TimeoutException):
            return CliError(f"the server {self.server} did not answer in time ({exc})")
        return CliError(f"cannot reach the server {self.server}: {exc}")
