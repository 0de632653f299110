"""Turning the JSON of an OpenAI-style embeddings request into encoder items.

Everything a client sends is checked here, before any of it reaches the model worker, so that a
hostile or malformed request costs one 4xx and never a batch: shapes and types, counts, text
length, base64, image pixel counts (read from the header, before any pixel is decoded) and the
modalities the model has. Media arrive as base64 and are written to files in a per-request
folder, so that :mod:`lcoemb.inputs` decodes them exactly as it decodes files on disk (with its
audio length and video frame caps, and reading only what it keeps) and memory stays bounded by
the request body, not by the decoded media. Errors that only decoding can find (a truncated PNG,
a corrupt MP4) come back from the worker for the item alone.

Accepted shapes (one *item* is one vector):

* ``input``: a string, a list of strings, or a list whose elements are each a string, one
  content part, or a list of content parts (several parts make one interleaved item, a single
  part is that part alone). Token-id arrays are refused.
* ``messages`` (vLLM's shape): a list of chat messages is one item, a list of such lists is one
  item per conversation. The content parts of all messages of a conversation are joined in
  order; roles are not used, since the encoder applies its own template.

Content parts: ``text``, ``image_url``, ``input_audio`` (base64 ``data`` and ``format``, as
OpenAI's chat API), ``audio_url`` and ``video_url``. A url is a base64 ``data:`` URI, a
server-side path (``file://`` or plain) allowed only under ``--media-root``, or an http(s) URL,
fetched only with ``--allow-url-fetch`` (a server that fetches what clients name can be made to
reach addresses only it can see, so the operator opts in). A fetch is streamed to the request's
folder and cut off past ``--max-fetch-mb`` or ``--fetch-timeout-s`` (a total deadline, so a
server that trickles bytes cannot hold a request forever); each failure is a 400 naming the item.
"""

from __future__ import annotations

import base64
import binascii
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import PIL.Image
from starlette.responses import JSONResponse

from lcoemb.config import ServeConfig
from lcoemb.inputs import Audio, ImageRef, InputError, RawItem, Video, inspect_item

#: A file suffix taken from a client's format or MIME subtype (never a path component).
_SUFFIX = re.compile(r"^[A-Za-z0-9]{1,10}$")


class ApiError(Exception):
    """A request that fails with ``status``, rendered in OpenAI's error shape so that clients
    (the official ``openai`` package among them) raise their usual typed exceptions."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def item_error(index: int, error: InputError) -> ApiError:
    """A 400 for item ``index`` of a request (``error.index`` may be a position in a batch)."""
    return ApiError(400, f"item {index}: {error.reason}", param="input", code="invalid_item")


@dataclass(frozen=True)
class RequestLimits:
    """What one request may hold; the server's flags."""

    max_items: int = 256
    max_text_chars: int = 100_000
    max_image_pixels: int = 4096 * 4096
    media_root: Path | None = None
    allow_url_fetch: bool = False
    max_fetch_bytes: int = 32 * 1024 * 1024
    fetch_timeout_s: float = 10.0

    @classmethod
    def from_config(cls, config: ServeConfig) -> RequestLimits:
        """The limits that the server's settings (``lcoemb serve``'s flags) set."""
        return cls(
            max_items=config.max_items_per_request,
            max_text_chars=config.max_text_chars,
            max_image_pixels=config.max_image_pixels,
            media_root=config.media_root,
            allow_url_fetch=config.allow_url_fetch,
            max_fetch_bytes=int(config.max_fetch_mb * 1024 * 1024),
            fetch_timeout_s=config.fetch_timeout_s,
        )


@dataclass(frozen=True)
class ModelInfo:
    """What requests are checked against: the served model's name, width and towers."""

    name: str
    embedding_dim: int
    modalities: frozenset[str]


@dataclass
class EmbeddingRequest:
    """A checked request: items with their :func:`~lcoemb.inputs.inspect_item` groups (the
    batcher only batches items of one group together) and the encoding options."""

    items: list[RawItem]
    groups: list[str]
    texts: list[list[str]]
    dimensions: int | None
    encoding_format: str
    instruction: str | None


class Scratch:
    """A request's folder for the media it uploads, made on the first file only: most requests
    carry text alone, and making and removing a folder for each would cost the server more than
    parsing them. :meth:`cleanup` removes it (a no-op if never made)."""

    def __init__(self) -> None:
        self._path: Path | None = None

    @property
    def used(self) -> bool:
        return self._path is not None

    def path(self) -> Path:
        if self._path is None:
            self._path = Path(tempfile.mkdtemp(prefix="lcoemb-serve-"))
        return self._path

    def cleanup(self) -> None:
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None


def parse_request(
    body: Any, model: ModelInfo, limits: RequestLimits, workdir: Scratch
) -> EmbeddingRequest:
    """Check ``body`` and build its items, writing uploaded media under ``workdir``."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    name = body.get("model")
    if name is not None and name != model.name:
        raise ApiError(
            404,
            f"model {name!r} is not served here; this server serves {model.name!r}",
            param="model",
            code="model_not_found",
        )
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise ApiError(400, "encoding_format must be 'float' or 'base64'", param="encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        type(dimensions) is not int or not 1 <= dimensions <= model.embedding_dim
    ):
        raise ApiError(
            400,
            f"dimensions must be an integer between 1 and {model.embedding_dim}",
            param="dimensions",
        )
    instruction = body.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise ApiError(400, "instruction must be a string", param="instruction")

    raw = _raw_items(body)
    if len(raw) > limits.max_items:
        raise ApiError(
            400,
            f"{len(raw)} items in one request; this server accepts at most {limits.max_items}",
            param="input",
            code="too_many_items",
        )
    builder = _ItemBuilder(limits, workdir)
    items: list[RawItem] = []
    groups: list[str] = []
    texts: list[list[str]] = []
    for index, parts in enumerate(raw):
        built = [builder.part(part, index) for part in parts]
        item: RawItem = built[0] if len(built) == 1 else built
        try:
            info = inspect_item(item, index)
        except InputError as error:
            raise item_error(index, error) from None
        missing = sorted(set(info.modalities) - model.modalities)
        if missing:
            raise ApiError(
                400,
                f"item {index}: model {model.name!r} cannot encode {', '.join(missing)} "
                f"(it supports {', '.join(sorted(model.modalities))})",
                param="input",
                code="unsupported_modality",
            )
        items.append(item)
        groups.append(info.group)
        texts.append([p for p in built if isinstance(p, str)])
    return EmbeddingRequest(items, groups, texts, dimensions, fmt, instruction)


def _raw_items(body: dict[str, Any]) -> list[list[Any]]:
    """Each item as its list of parts (strings or content-part objects), not yet checked."""
    if ("input" in body) == ("messages" in body):
        raise ApiError(400, "give exactly one of 'input' and 'messages'", param="input")
    if "messages" in body:
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "messages must be a non-empty list", param="messages")
        conversations = messages if isinstance(messages[0], list) else [messages]
        return [_conversation_parts(c, i) for i, c in enumerate(conversations)]
    value = body["input"]
    if isinstance(value, str):
        return [[value]]
    if not isinstance(value, list) or not value:
        raise ApiError(400, "input must be a string or a non-empty list", param="input")
    items = []
    for index, element in enumerate(value):
        if isinstance(element, (str, dict)):
            items.append([element])
        elif isinstance(element, list) and element and not _is_number(element[0]):
            items.append(element)
        else:
            raise ApiError(
                400,
                f"item {index}: expected a string, a content part or a non-empty list of content "
                f"parts, got {_describe(element)} (token-id input is not supported)",
                param="input",
            )
    return items


def _conversation_parts(conversation: Any, index: int) -> list[Any]:
    if not isinstance(conversation, list) or not conversation:
        raise ApiError(
            400, f"item {index}: a conversation must be a non-empty list", param="messages"
        )
    parts: list[Any] = []
    for message in conversation:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list) and content:
            parts += content
        else:
            raise ApiError(
                400,
                f"item {index}: each message must be an object whose content is a string or a "
                "non-empty list of content parts",
                param="messages",
            )
    return parts


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))


def _describe(value: Any) -> str:
    return "an empty list" if value == [] else type(value).__name__


class _ItemBuilder:
    """Builds the parts of one request, numbering the files it writes under ``workdir``."""

    def __init__(self, limits: RequestLimits, workdir: Scratch):
        self.limits = limits
        self.workdir = workdir
        self.files = 0

    def part(self, part: Any, index: int) -> str | ImageRef | Audio | Video:
        if isinstance(part, str):
            return self._text(part, index)
        if not isinstance(part, dict):
            raise ApiError(
                400, f"item {index}: a content part must be an object, got {_describe(part)}"
            )
        kind = part.get("type")
        if kind == "text":
            return self._text(part.get("text"), index)
        if kind == "image_url":
            path = self._media(self._url(part, kind, index), index, "image")
            self._check_pixels(path, index)
            return ImageRef(path)
        if kind == "input_audio":
            audio = part.get("input_audio")
            data = audio.get("data") if isinstance(audio, dict) else None
            suffix = audio.get("format") if isinstance(audio, dict) else None
            if not isinstance(data, str) or not isinstance(suffix, str):
                raise ApiError(
                    400, f"item {index}: input_audio needs string 'data' (base64) and 'format'"
                )
            return Audio(self._write(_b64decode(data, index), suffix, index))
        if kind == "audio_url":
            return Audio(self._media(self._url(part, kind, index), index, "audio"))
        if kind == "video_url":
            return Video(self._media(self._url(part, kind, index), index, "video"))
        raise ApiError(
            400,
            f"item {index}: unknown content part type {kind!r}; expected text, image_url, "
            "input_audio, audio_url or video_url",
        )

    def _text(self, text: Any, index: int) -> str:
        if not isinstance(text, str):
            raise ApiError(400, f"item {index}: text must be a string, got {_describe(text)}")
        if len(text) > self.limits.max_text_chars:
            raise ApiError(
                400,
                f"item {index}: text of {len(text)} characters; this server accepts at most "
                f"{self.limits.max_text_chars}",
            )
        return text

    @staticmethod
    def _url(part: dict[str, Any], kind: str, index: int) -> str:
        value = part.get(kind)
        url = value.get("url") if isinstance(value, dict) else None
        if not isinstance(url, str):
            raise ApiError(400, f"item {index}: {kind} needs an object with a string 'url'")
        return url

    def _media(self, url: str, index: int, kind: str) -> Path:
        """The file behind ``url``: an uploaded ``data:`` URI written out, or a checked path."""
        if url.startswith("data:"):
            header, comma, payload = url.partition(",")
            if not comma or not header.endswith(";base64"):
                raise ApiError(400, f"item {index}: {kind} data URI must be 'data:<type>;base64,'")
            subtype = header.removeprefix("data:").removesuffix(";base64").rpartition("/")[2]
            return self._write(_b64decode(payload, index), subtype, index)
        scheme = urlparse(url).scheme.lower()
        if scheme in ("http", "https") and self.limits.allow_url_fetch:
            return self._fetch(url, index, kind)
        if scheme in ("http", "https"):
            raise ApiError(
                400,
                f"item {index}: fetching {kind} from http(s) URLs is not enabled on this server; "
                "send the data as a base64 data: URI",
                code="url_not_enabled",
            )
        return self._server_path(unquote(url[len("file://") :]) if scheme == "file" else url, index)

    def _fetch(self, url: str, index: int, kind: str) -> Path:
        """Download ``url`` into the request's folder, refused as soon as it declares or sends
        more than the cap, or takes longer than the timeout in all (httpx's own timeouts bound
        each read, not the whole transfer)."""
        limits = self.limits

        def fail(what: str, code: str) -> ApiError:
            return ApiError(400, f"item {index}: cannot fetch {kind} from {url}: {what}", code=code)

        too_large = fail(f"over the server's limit of {limits.max_fetch_bytes} bytes", "too_large")
        timed_out = fail(f"no answer within {limits.fetch_timeout_s:g} s", "fetch_timeout")
        deadline = time.monotonic() + limits.fetch_timeout_s
        try:
            with httpx.stream(
                "GET", url, timeout=limits.fetch_timeout_s, follow_redirects=True
            ) as response:
                if response.status_code != 200:
                    raise fail(f"HTTP {response.status_code}", "fetch_failed")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limits.max_fetch_bytes:
                    raise too_large
                mime = response.headers.get("content-type", "").partition(";")[0]
                suffix = mime.rpartition("/")[2].strip() or Path(urlparse(url).path).suffix[1:]
                path, size = self._new_path(suffix), 0
                with path.open("wb") as out:
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > limits.max_fetch_bytes:
                            raise too_large
                        if time.monotonic() > deadline:
                            raise timed_out
                        out.write(chunk)
        except httpx.TimeoutException:
            raise timed_out from None
        except httpx.HTTPError as error:
            raise fail(str(error) or type(error).__name__, "fetch_failed") from None
        if size == 0:
            raise ApiError(400, f"item {index}: empty media data")
        return path

    def _server_path(self, path: str, index: int) -> Path:
        """A path on the server, refused unless it resolves (symlinks included) under the media
        root, so that no request can read files the operator did not expose."""
        root = self.limits.media_root
        if root is None:
            raise ApiError(
                400,
                f"item {index}: server-side file paths are not enabled on this server (it was "
                "started without --media-root)",
                code="paths_not_enabled",
            )
        root = root.resolve()
        resolved = (root / path).resolve()
        if not resolved.is_relative_to(root):
            raise ApiError(
                400, f"item {index}: path {path!r} is outside the media root", code="path_refused"
            )
        return resolved

    def _write(self, data: bytes, suffix: str, index: int) -> Path:
        if not data:
            raise ApiError(400, f"item {index}: empty media data")
        path = self._new_path(suffix)
        path.write_bytes(data)
        return path

    def _new_path(self, suffix: str) -> Path:
        """A fresh file name under ``workdir``; the suffix (from the client) only if harmless."""
        self.files += 1
        return self.workdir.path() / f"{self.files}.{suffix if _SUFFIX.match(suffix) else 'bin'}"

    def _check_pixels(self, path: Path, index: int) -> None:
        """Refuse an image whose header claims more pixels than the cap, before decoding: a few
        KB of PNG can declare gigabytes of pixels (a decompression bomb)."""
        try:
            with PIL.Image.open(path) as image:
                width, height = image.size
        except PIL.Image.DecompressionBombError as error:
            raise ApiError(400, f"item {index}: image too large: {error}") from None
        except Exception:  # missing or unreadable: inspect_item says which, as for any file
            return
        if width * height > self.limits.max_image_pixels:
            raise ApiError(
                400,
                f"item {index}: image of {width}x{height} = {width * height} pixels; this server "
                f"accepts at most {self.limits.max_image_pixels}",
                code="image_too_large",
            )


def _b64decode(data: str, index: int) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ApiError(400, f"item {index}: invalid base64 data: {error}") from None
