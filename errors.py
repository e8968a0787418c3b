"""The exception tree for one item's transfer.

Every error carries the URL it happened on and says whether trying the same URL again later can
succeed (`retryable`). The engine turns these into per-item results; only `DeadlineExceeded` means
"not finished" rather than "failed".
"""
from __future__ import annotations


class TransferError(Exception):
    """Base class: something went wrong with one URL."""

    retryable = False

    def __init__(self, message: str, *, url: str = "", retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.url = url
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return self.message


class InvalidURL(TransferError):
    """The URL cannot be fetched at all: bad syntax, or a scheme other than http/https."""


class BlockedAddress(TransferError):
    """The host resolves to an address that may not be fetched (loopback, private, ...)."""


class OriginUnreachable(TransferError):
    """DNS, connect, TLS or socket failure talking to the origin."""

    retryable = True


class HTTPStatusError(TransferError):
    """The origin answered with a status that is not a success."""

    def __init__(self, status: int, reason: str, *, url: str = "", retry_after: float | None = None) -> None:
        retryable = status >= 500 or status in (408, 429)
        super().__init__(f"HTTP {status} {reason}".rstrip(), url=url, retryable=retryable)
        self.status = status
        self.retry_after = retry_after


class BadResponse(TransferError):
    """The origin answered in a way we never asked for (a range, an encoding, extra bytes)."""


class RedirectError(TransferError):
    """A redirect loop, too many redirects, or a redirect without a usable Location."""


class BodyError(TransferError):
    """The body could not be read completely; `bytes_read` says how far it got."""

    retryable = True

    def __init__(self, message: str, *, url: str = "", bytes_read: int = 0, retryable: bool | None = None) -> None:
        super().__init__(message, url=url, retryable=retryable)
        self.bytes_read = bytes_read


class TooLarge(BodyError):
    """The body is larger than the configured maximum; retrying cannot help."""

    retryable = False


class NotAnImage(TransferError):
    """The body is not an image (for example an HTML error page served with 200)."""


class UploadError(TransferError):
    """S3 refused or failed the upload after botocore's own retries."""

    retryable = True


class BatchAborted(TransferError):
    """A fault that fails every item the same way (no bucket, access denied): stop the batch."""


class DeadlineExceeded(TransferError):
    """The invocation ran out of time before this item finished; it goes back as remaining."""

    retryable = True
