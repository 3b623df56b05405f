"""HTTP for the Xeno-canto downloader (standard library `urllib` only): one rate limit, retries, streamed bodies.

Every request (retries included) goes through one `RateLimiter`. Status 429 and 5xx, timeouts and dropped
connections are retried with exponential backoff (``Retry-After`` honoured); other 4xx fail at once.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional, Sequence

log = logging.getLogger(__name__)

USER_AGENT = "bird-diffusion-downloader/1.0 (Python urllib)"
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_CHUNK = 1 << 16
_MAX_RETRY_AFTER_S = 300.0


class TransferError(Exception):
    """A failed transfer: `reason` names it for the report; `retry` says whether trying again may help."""

    def __init__(self, reason: str, detail: str, retry: bool, retry_after: Optional[float] = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retry = retry
        self.retry_after = retry_after


class RateLimiter:
    """Spaces request starts at least 1/rate seconds apart, across threads (rate <= 0: no limit)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until the next request may start."""
        if self.interval <= 0:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


def _retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a Retry-After header (delta seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpClient:
    """urllib GETs through a shared rate limiter, with retries and exponential backoff."""

    def __init__(
        self, rate_limit: float = 1.0, retries: int = 3, timeout: float = 60.0, backoff: float = 2.0,
        redact: Sequence[str] = (),
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.limiter = RateLimiter(rate_limit)
        self.retries = int(retries)
        self.timeout = float(timeout)
        self.backoff = float(backoff)
        self.redact = [s for s in redact if s]
        self._lock = threading.Lock()
        self.requests = 0

    def clean(self, text: str) -> str:
        """`text` with secrets (the API key) replaced by '***'."""
        for secret in self.redact:
            text = text.replace(secret, "***").replace(urllib.parse.quote(secret, safe=""), "***")
        return text

    def _open(self, url: str) -> http.client.HTTPResponse:
        """One rate-limited request; HTTP and network errors become TransferError."""
        self.limiter.wait()
        with self._lock:
            self.requests += 1
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310 (http/https only, see fetch)
        except urllib.error.HTTPError as error:
            body = error.read(2000).decode("utf-8", "replace")
            error.close()
            retry = error.code in _RETRY_STATUS
            raise TransferError(f"http_{error.code}", self.clean(f"{error.reason} {body}".strip()), retry,
                                 _retry_after(error.headers.get("Retry-After"))) from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, http.client.HTTPException,
                OSError) as error:
            reason = getattr(error, "reason", error)
            name = "timeout" if isinstance(reason, (socket.timeout, TimeoutError)) else "network"
            raise TransferError(name, self.clean(str(reason)), True) from None

    def with_retries(self, url: str, action: Any) -> Any:
        """Call `action(response)` on a response for `url`, retrying transient failures; raises TransferError."""
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise TransferError("bad_url", f"not an http(s) URL: {self.clean(url)}", False)
        attempt = 0
        while True:
            try:
                response = self._open(url)
                with response:
                    return action(response)
            except (socket.timeout, TimeoutError) as error:
                failure = TransferError("timeout", str(error), True)
            except (ConnectionError, http.client.HTTPException, OSError) as error:
                failure = TransferError("network", self.clean(str(error)), True)
            except TransferError as error:
                failure = error
            if not failure.retry or attempt >= self.retries:
                raise failure
            delay = self.backoff * 2**attempt
            if failure.retry_after is not None:
                delay = max(delay, min(failure.retry_after, _MAX_RETRY_AFTER_S))
            log.info("retrying %s in %.2f s (%s)", self.clean(url), delay, failure)
            time.sleep(delay)
            attempt += 1

    def get_json(self, url: str) -> Any:
        """GET and decode a JSON document."""

        def read(response: http.client.HTTPResponse) -> Any:
            data = _read_body(response, None)
            try:
                return json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise TransferError("bad_json", f"response is not JSON: {error}", True) from None

        return self.with_retries(url, read)

    def download(self, url: str, dest: Path) -> int:
        """GET `url` into `dest` (overwritten); returns the byte count, checked against Content-Length."""

        def read(response: http.client.HTTPResponse) -> int:
            return _read_body(response, dest)

        return self.with_retries(url, read)


def _read_body(response: http.client.HTTPResponse, dest: Optional[Path]) -> Any:
    """The body (bytes) or, with `dest`, its size after writing it there; a short body is a 'truncated' error."""
    length_header = response.headers.get("Content-Length")
    expected = int(length_header) if length_header and length_header.strip().isdigit() else None
    received = 0
    chunks: list[bytes] = []
    try:
        handle = open(dest, "wb") if dest is not None else None
    except OSError as error:
        raise TransferError("write_error", str(error), False) from None
    try:
        while True:
            chunk = response.read(_CHUNK)
            if not chunk:
                break
            received += len(chunk)
            if handle is None:
                chunks.append(chunk)
                continue
            try:
                handle.write(chunk)
            except OSError as error:
                raise TransferError("write_error", str(error), False) from None
    finally:
        if handle is not None:
            handle.close()
    if expected is not None and received != expected:
        raise TransferError("truncated", f"received {received} of {expected} bytes", True)
    return received if dest is not None else b"".join(chunks)
