"""Outbound HTTP over the standard `wasi:http` interface: a small blocking client. The
manifest grants the destinations (`allowed_outbound_hosts`); the host refuses the rest,
internal addresses, and requests past its limits, each with an `HttpError`.

    page = http.get("https://api.example.com/items?page=1")
    created = http.post("https://api.example.com/items", json={"name": "widget"},
                        headers={"authorization": "Bearer token"})
    if created.status >= 500:
        raise Retry(f"the API answered {created.status}")
    items = page.json()

Redirects are not followed: a 3xx is a response like any other.
"""

import json as jsonlib
from collections.abc import Mapping
from dataclasses import dataclass

from componentize_py_types import Err
from wit_world.imports import outgoing_handler
from wit_world.imports import wasi_http_types as wit
from wit_world.imports.streams import StreamError_Closed

from .errors import CapabilityError

_METHODS = {
    "GET": wit.Method_Get,
    "HEAD": wit.Method_Head,
    "POST": wit.Method_Post,
    "PUT": wit.Method_Put,
    "DELETE": wit.Method_Delete,
    "OPTIONS": wit.Method_Options,
    "PATCH": wit.Method_Patch,
}
_SCHEMES = {"http": wit.Scheme_Http, "https": wit.Scheme_Https}
# Refusals by the host: retrying does not help.
_DENIALS = {"HttpRequestDenied", "DestinationIpProhibited", "ConnectionLimitReached"}
_INVALID = {"HttpRequestUriInvalid", "HttpProtocolError"}
_CHUNK = 4096


class HttpError(CapabilityError):
    """A request failed. `kind` is `invalid-url`, `denied` (the host refused it: not
    granted, an internal address, or past the job's request cap), `failed` (DNS,
    connection, TLS, a timeout, a response over the host's caps: worth a retry) or `body`
    (the body could not be written or read). `detail` names the `wasi:http` error code,
    such as `HttpRequestDenied`, where there is one.
    """

    transient = frozenset({"failed"})


@dataclass
class Response:
    """A response: status, headers (names in lowercase, in order) and the whole body."""

    status: int
    headers: list[tuple[str, bytes]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), as text."""
        name = name.lower()
        return next((v.decode(errors="replace") for k, v in self.headers if k == name), None)

    def text(self) -> str:
        """The body as text (invalid UTF-8 replaced)."""
        return self.body.decode(errors="replace")

    def json(self) -> object:
        """The body parsed as JSON."""
        return jsonlib.loads(self.body)


def get(url: str, **options) -> Response:
    """Sends a GET request; see `request` for the options."""
    return request("GET", url, **options)


def post(url: str, **options) -> Response:
    """Sends a POST request; see `request` for the options."""
    return request("POST", url, **options)


def put(url: str, **options) -> Response:
    """Sends a PUT request; see `request` for the options."""
    return request("PUT", url, **options)


def delete(url: str, **options) -> Response:
    """Sends a DELETE request; see `request` for the options."""
    return request("DELETE", url, **options)


def request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str | bytes] | None = None,
    body: bytes | str | None = None,
    json: object = None,
) -> Response:
    """Sends a request and reads the whole response. `json` sends a value as a JSON body
    with its content type; `body` sends bytes (or text as UTF-8) as they are.
    """
    scheme, authority, path = _split(url)
    fields = [(name.lower(), _bytes(value)) for name, value in (headers or {}).items()]
    if json is not None:
        body = jsonlib.dumps(json)
        fields.append(("content-type", b"application/json"))
    payload = _bytes(body or b"")
    if payload and not any(name == "content-length" for name, _ in fields):
        fields.append(("content-length", str(len(payload)).encode()))
    try:
        header_fields = wit.Fields.from_list(fields)
    except Err as err:
        raise HttpError("invalid-url", f"a header: {err.value}") from None
    outgoing = wit.OutgoingRequest(header_fields)
    verb = method.upper()
    method_case = _METHODS[verb]() if verb in _METHODS else wit.Method_Other(verb)
    for setter, value, what in (
        (outgoing.set_method, method_case, "method"),
        (outgoing.set_scheme, scheme, "scheme"),
        (outgoing.set_authority, authority, "host"),
        (outgoing.set_path_with_query, path, "path"),
    ):
        try:
            setter(value)
        except Err:
            raise HttpError("invalid-url", f"the {what} of `{url}`") from None
    outgoing_body = outgoing.body()
    try:
        future = outgoing_handler.handle(outgoing, None)
    except Err as err:
        raise _classify(err.value) from None
    _write(outgoing_body, payload)
    try:
        wit.OutgoingBody.finish(outgoing_body, None)
    except Err as err:
        raise _classify(err.value) from None
    with future:
        with future.subscribe() as ready:
            ready.block()
        outcome = future.get()
    # option<result<result<incoming-response, error-code>>>: the results nest as Ok / Err.
    if outcome is None or isinstance(outcome, Err):
        raise HttpError("failed", "no response")
    received = outcome.value
    if isinstance(received, Err):
        raise _classify(received.value)
    with received.value as response:
        with response.headers() as fields_in:
            response_headers = [(k.lower(), v) for k, v in fields_in.entries()]
        return Response(response.status(), response_headers, _read(response))


def _split(url: str) -> tuple[wit.Scheme, str, str]:
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in _SCHEMES:
        raise HttpError("invalid-url", f"`{url}` is not http(s)://")
    cut = min((at for at in (rest.find("/"), rest.find("?")) if at >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if not path.startswith("/"):
        path = "/" + path
    return _SCHEMES[scheme](), authority, path


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _write(outgoing_body: wit.OutgoingBody, payload: bytes) -> None:
    if not payload:
        return
    with outgoing_body.write() as stream:
        for start in range(0, len(payload), _CHUNK):
            try:
                stream.blocking_write_and_flush(payload[start : start + _CHUNK])
            except Err as err:
                raise HttpError("body", f"writing the request body: {err.value}") from None


def _read(response: wit.IncomingResponse) -> bytes:
    chunks = []
    with response.consume() as incoming, incoming.stream() as stream:
        while True:
            try:
                chunks.append(stream.blocking_read(64 << 10))
            except Err as err:
                if isinstance(err.value, StreamError_Closed):
                    return b"".join(chunks)
                code = wit.http_error_code(err.value.value)
                if code is None:
                    raise HttpError("failed", err.value.value.to_debug_string()) from None
                raise _classify(code) from None


def _classify(code: wit.ErrorCode) -> HttpError:
    name = type(code).__name__.removeprefix("ErrorCode_")
    payload = getattr(code, "value", None)
    detail = name if payload is None else f"{name}({payload})"
    if name in _DENIALS:
        return HttpError("denied", detail)
    if name in _INVALID:
        return HttpError("invalid-url", detail)
    return HttpError("failed", detail)
