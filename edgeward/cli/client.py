"""A small HTTP client for the hub's REST API, on the standard library only.

One connection per request: the CLI makes a handful of requests per run, and
a fresh connection never trips over a keep-alive socket the server dropped.
Proxy variables are not honoured; the hub is addressed directly. A token is sent
as ``Authorization: Bearer``; an https hub is verified against the configured CA
only, or the system's CAs when none is configured.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from edgeward.cli.errors import ApiError, HubUnreachable, TokenRefused, UsageError
from edgeward.kinds import Kind

if TYPE_CHECKING:
    import http.client
    import ssl

DEFAULT_HUB = "http://127.0.0.1:10002"
DEFAULT_TIMEOUT = 10.0
MAX_LINE_BYTES = 16 * 1024 * 1024
_HINT = "(is cloudhub running? set --hub or EDGEWARD_HUB)"
_NO_TOKEN_HINT = "use --config <admin.yaml> or set EDGEWARD_TOKEN"
# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH
_NAME_MISMATCH = (62, 64)


@dataclass(frozen=True)
class Credentials:
    """What proves the hub to us (``ca_pem``) and us to the hub (``token``).

    ``token_from`` and ``ca_from`` name where each came from (an environment variable
    or a config file's path), so an error line can say what to fix.
    """

    token: str | None = None
    ca_pem: str | None = None
    token_from: str | None = None
    ca_from: str | None = None


class HubClient:
    """Requests to one hub; every failure becomes a :class:`CliError` with one clear line."""

    def __init__(
        self,
        url: str,
        timeout: float = DEFAULT_TIMEOUT,
        credentials: Credentials | None = None,
    ) -> None:
        self.url, self._scheme, self._host, self._port, self._prefix = _parse_url(url)
        self.timeout = timeout
        self.credentials = credentials or Credentials()
        self._tls: ssl.SSLContext | None = None

    # -- paths ----------------------------------------------------------------

    @staticmethod
    def collection_path(kind: Kind, namespace: str | None) -> str:
        """The collection of ``kind`` in ``namespace`` (every namespace when None)."""
        if kind.namespaced and namespace is not None:
            return f"/api/v1/namespaces/{_seg(namespace)}/{kind.plural}"
        return f"/api/v1/{kind.plural}"

    @classmethod
    def object_path(cls, kind: Kind, namespace: str | None, name: str) -> str:
        return f"{cls.collection_path(kind, namespace)}/{_seg(name)}"

    # -- requests -------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """The parsed JSON answer of a 2xx response; ApiError for an error Status."""
        conn, resp = self._open(method, path, body, content_type)
        try:
            raw = self._read(resp, method, path)
        finally:
            conn.close()
        return self._decode(resp, raw, method, path)

    def stream(self, path: str) -> Iterator[dict[str, Any]]:
        """The newline-delimited JSON objects of a streaming GET (a watch), as they arrive.

        Ends when the server ends the stream; raises HubUnreachable when the
        connection breaks.
        """
        conn, resp = self._open("GET", path, None, "application/json")
        try:
            if resp.status >= 300:
                raw = self._read(resp, "GET", path)
                self._decode(resp, raw, "GET", path)  # raises with the hub's reason
            if conn.sock is not None:
                conn.sock.settimeout(None)  # a quiet watch is not a dead hub
            for line in self._lines(resp):
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    raise HubUnreachable(
                        f"the hub at {self.url} sent a watch line that is not JSON: "
                        f"{_preview(line)}"
                    ) from None
                if isinstance(event, dict):
                    yield event
        finally:
            conn.close()

    # -- plumbing -------------------------------------------------------------

    def _open(
        self, method: str, path: str, body: Any, content_type: str
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        import http.client  # imported here: it costs a tenth of `edgeward --help`

        conn: http.client.HTTPConnection
        if self._scheme == "https":
            conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=self._context()
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        headers = {"Accept": "application/json", "User-Agent": "edgeward-cli"}
        # Only a hub run --insecure speaks plain http, and it reads no token: sending one
        # there could only hand it to whoever listens on the way.
        if self.credentials.token and self._scheme == "https":
            headers["Authorization"] = f"Bearer {self.credentials.token}"
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = content_type
        try:
            conn.request(method, self._prefix + path, body=data, headers=headers)
            return conn, conn.getresponse()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, OSError | http.client.HTTPException):
                raise self._unreachable(exc) from None
            raise

    def _context(self) -> ssl.SSLContext:
        """Verifies the hub against the configured CA alone, or the system's CAs."""
        if self._tls is None:
            import ssl

            self._tls = ssl.create_default_context(cadata=self.credentials.ca_pem)
        return self._tls

    def _lines(self, resp: http.client.HTTPResponse) -> Iterator[bytes]:
        # read1, unlike readline, tells a stream the hub ended (b"") from a cut
        # connection (IncompleteRead), so a dead hub is not mistaken for a finished watch.
        import http.client

        pending = b""
        while True:
            try:
                data = resp.read1(64 * 1024)
            except (OSError, http.client.HTTPException) as exc:
                raise HubUnreachable(
                    f"lost the connection to the hub at {self.url}: {_reason(exc)}"
                ) from None
            if not data:
                if pending:
                    yield pending
                return
            pending += data
            *lines, pending = pending.split(b"\n")
            yield from lines
            if len(pending) > MAX_LINE_BYTES:
                raise HubUnreachable(
                    f"the hub at {self.url} sent a watch event over {MAX_LINE_BYTES} bytes"
                )

    def _read(self, resp: http.client.HTTPResponse, method: str, path: str) -> bytes:
        import http.client

        try:
            return resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None

    def _decode(self, resp: http.client.HTTPResponse, raw: bytes, method: str, path: str) -> Any:
        try:
            body = json.loads(raw) if raw.strip() else None
        except (ValueError, RecursionError):
            ctype = resp.getheader("Content-Type", "no content type")
            raise HubUnreachable(
                f"the hub at {self.url} answered {method} {path} with a non-JSON response "
                f"(HTTP {resp.status}, {ctype}): {_preview(raw)}; "
                "is --hub pointing at an Edgeward cloudhub?"
            ) from None
        if 200 <= resp.status < 300:
            return body
        status = isinstance(body, dict) and body.get("kind") == "Status"
        reason = str(body.get("reason") or "") if status else ""
        if status:
            message = status_message(body)
        else:
            message = (
                f"HTTP {resp.status} {resp.reason} from the hub at {self.url} for {method} {path}"
            )
        if resp.status == 401:
            raise TokenRefused(401, reason, self._refused(message))
        if status and resp.status == 404 and message == "no such path":
            message = (
                f"the hub at {self.url} has no {path.split('?')[0]}; "
                "is --hub the address of a cloudhub's REST API?"
            )
        raise ApiError(resp.status, reason, message)

    def _refused(self, message: str) -> str:
        """The line for a 401: no token at all, or which token to fix."""
        creds = self.credentials
        if not creds.token:
            return f"the hub at {self.url} needs a token: {_NO_TOKEN_HINT}"
        if creds.token_from == "EDGEWARD_TOKEN":
            fix = " (it came from EDGEWARD_TOKEN: set a valid one or unset it)"
        elif creds.token_from:
            fix = f" (set EDGEWARD_TOKEN or the token in {creds.token_from})"
        else:
            fix = ""
        return f"the hub refused the token: {message}{fix}"

    def _unverified(self, exc: ssl.SSLCertVerificationError) -> HubUnreachable:
        reason = str(exc.verify_message or exc.reason or exc).rstrip(".")
        if exc.verify_code in _NAME_MISMATCH:
            flag = "--ip" if _is_ip(self._host) else "--hostname"
            fix = (
                f"the hub's certificate is not for {self._host}: on the hub, run "
                f"'cloudhub init {flag} {self._host}' and restart it"
            )
        elif self.credentials.ca_from == "EDGEWARD_CA":
            fix = "is the CA file EDGEWARD_CA names the hub's?"
        elif self.credentials.ca_from:
            fix = f"is the CA in your config ({self.credentials.ca_from}) the hub's?"
        else:
            fix = (
                "no CA is configured, so the system's were tried: "
                "use --config <admin.yaml> or set EDGEWARD_CA"
            )
        return HubUnreachable(f"cannot verify the hub at {self.url}: {reason}; {fix}")

    def _unreachable(self, exc: BaseException) -> HubUnreachable:
        import http.client
        import ssl

        if isinstance(exc, ssl.SSLCertVerificationError):
            return self._unverified(exc)
        if isinstance(exc, TimeoutError | socket.timeout):
            return HubUnreachable(
                f"the hub at {self.url} did not answer within {self.timeout:g}s {_HINT}"
            )
        hint = _HINT
        if isinstance(exc, ssl.SSLError) and exc.reason == "WRONG_VERSION_NUMBER":
            hint = "(is it a plain http:// hub, run with --insecure?)"
        elif self._scheme == "http" and isinstance(exc, http.client.RemoteDisconnected):
            hint = "(a hub that serves TLS does that to plain http: try https://)"
        return HubUnreachable(f"cannot reach the hub at {self.url}: {_reason(exc)} {hint}")


def status_message(status: dict[str, Any]) -> str:
    """The line to show for a Kubernetes Status: its message, plus causes it does not name."""
    message = str(status.get("message") or status.get("reason") or "unknown error")
    details = status.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    if isinstance(causes, list):
        extra = []
        for cause in causes:
            if not isinstance(cause, dict):
                continue
            text = str(cause.get("message", ""))
            field = cause.get("field")
            if text and text not in message:
                extra.append(f"{field}: {text}" if field else text)
        if extra:
            message = f"{message}: {'; '.join(extra)}"
    return message


def _parse_url(url: str) -> tuple[str, str, str, int | None, str]:
    url = url.strip()
    bad = f'bad hub URL "{url}"'
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"{bad}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UsageError(f"{bad}: it must start with http:// or https://")
    if not parts.hostname:
        raise UsageError(f"{bad}: it names no host")
    if parts.query or parts.fragment:
        raise UsageError(f"{bad}: it must not have a query or fragment")
    return url.rstrip("/"), parts.scheme, parts.hostname, port, parts.path.rstrip("/")


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _seg(value: str) -> str:
    return quote(value, safe="")


def _reason(exc: BaseException) -> str:
    import http.client
    import ssl

    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "cannot resolve the host name"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the connection was closed before an answer came"
    if isinstance(exc, http.client.IncompleteRead):
        return "the answer was cut short"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _preview(raw: bytes, limit: int = 80) -> str:
    text = raw.decode("utf-8", "replace").strip().replace("\n", " ")
    return repr(text[:limit] + ("..." if len(text) > limit else ""))
