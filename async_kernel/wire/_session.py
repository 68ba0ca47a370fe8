"""The wire format: signing, verification, framing and JSON encoding of Jupyter messages.

A message on the wire is `[*idents, b"<IDS|MSG>", signature, header, parent_header, metadata,
content, *buffers]`. The signature is an HMAC of the four JSON frames; a message whose
signature is missing, wrong or seen before is refused with a `MessageError`, and so is one
whose header cannot be decoded (there is nothing to reply to). A correctly signed message with
a usable header is always decoded: what is wrong with the rest is its `problem`, so that the
kernel can answer it with an error instead of leaving the client waiting.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from async_kernel.wire._frames import DELIMITER, Frame, frame_of
from async_kernel.wire._json import decode_object, dumps, json_kind
from async_kernel.wire._replay import ReplayGuard

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = (
    "PROTOCOL_VERSION",
    "DropKind",
    "Message",
    "MessageError",
    "Session",
    "signature_digest",
    "utcnow_iso",
)

PROTOCOL_VERSION = "5.5"
_EMPTY = b"{}"


DropKind = Literal["framing", "unsigned", "signature", "replay", "header"]
"""Why a message is dropped: how drops are told apart (and counted) in the log."""

_STRING_HEADER_FIELDS = ("msg_id", "session", "username", "date", "version")


class MessageError(ValueError):
    """A message that cannot be accepted or answered: bad framing, signature, replay or header.

    Args:
        message: What is wrong.
        kind: The kind of problem, one word.
    """

    def __init__(self, message: str, *, kind: DropKind) -> None:
        super().__init__(message)
        self.kind: DropKind = kind
        """The kind of problem: drops of one kind are logged together."""


def signature_digest(signature_scheme: str) -> Callable[..., Any]:
    """Return the hashlib constructor that a signature scheme names.

    A scheme is `hmac-` followed by the name of a hashlib algorithm (`hmac-sha256`,
    `hmac-md5`, `hmac-sha512`, `hmac-sha3_256`, ...), spelled as hashlib spells its attribute:
    the schemes that jupyter_client can sign with.

    Raises:
        ValueError: The scheme is not of that form, or the algorithm cannot key an HMAC.
    """
    name = signature_scheme.removeprefix("hmac-")
    if name != signature_scheme and name in hashlib.algorithms_available:
        constructor: Any = getattr(hashlib, name, None)
        if constructor is not None:
            try:
                hmac.new(b"probe", digestmod=constructor).hexdigest()
            except (TypeError, ValueError):  # shake_128 and shake_256 have no fixed digest size
                pass
            else:
                return constructor
    usable = sorted(n for n in hashlib.algorithms_guaranteed if not n.startswith("shake"))
    msg = (
        f"unsupported signature scheme {signature_scheme!r}: use 'hmac-' and a hashlib "
        f"algorithm, one of {', '.join(usable)} (jupyter_client's default is 'hmac-sha256')"
    )
    raise ValueError(msg)


_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text


def utcnow_iso() -> str:
    """Return the current UTC time in ISO 8601 form, as the protocol's `date` fields use.

    Always with microseconds and a `Z`: `2026-12-05T11:50:00.000123Z`.
    """
    global _second
    now = time.time_ns() // 1000
    secs, micros = divmod(now, 1_000_000)
    cached = _second
    if cached[0] != secs:
        cached = _second = (secs, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)))
    return f"{cached[1]}.{micros:06d}Z"


@dataclass(slots=True)
class Message:
    """A decoded message, with the raw header kept so that replies can quote it unchanged."""

    header: dict[str, Any]
    """The header: msg_id, msg_type, session, username, date, version (and subshell_id)."""
    parent_header: dict[str, Any]
    """The header of the message this one answers, or `{}`."""
    metadata: dict[str, Any]
    """Free-form metadata."""
    content: dict[str, Any]
    """The message type's content."""
    buffers: list[Frame] = field(default_factory=list[Frame])
    """Binary buffers that follow the content frame (received ones are read-only views)."""
    idents: list[bytes] = field(default_factory=list[bytes])
    """The routing identities of the sender (ROUTER sockets)."""
    raw_header: bytes = b""
    """The header frame as received: replies use it as their parent frame verbatim."""
    problem: str | None = None
    """What is malformed, if anything: such a message is answered with an error, never run.

    Parts that could not be decoded are `{}`."""

    def to_dict(self) -> dict[str, Any]:
        """Return the message as the dict that `jupyter_client` and the `comm` package use."""
        return {
            "header": self.header,
            "parent_header": self.parent_header,
            "metadata": self.metadata,
            "content": self.content,
            "buffers": self.buffers,
            "msg_id": self.msg_id,
            "msg_type": self.msg_type,
        }

    @property
    def msg_type(self) -> str:
        """The header's `msg_type`."""
        return self.header.get("msg_type", "")

    @property
    def msg_id(self) -> str:
        """The header's `msg_id`."""
        return self.header.get("msg_id", "")


class Session:
    """Signs, verifies, encodes and decodes messages for one kernel.

    Args:
        key: The shared secret from the connection file. An empty key disables signing.
        signature_scheme: The connection file's scheme, `hmac-<hashlib algorithm>`.
        username: The `username` put in the headers of the messages this session creates.
        replay_window: How many recent signatures are remembered to refuse replays.

    Raises:
        ValueError: The signature scheme is not one that jupyter_client can sign with.
    """

    def __init__(
        self,
        key: bytes,
        *,
        signature_scheme: str = "hmac-sha256",
        username: str = "kernel",
        replay_window: int = 65536,
    ) -> None:
        digest = signature_digest(signature_scheme)  # checked even unsigned, as jupyter_client
        self.key = key
        self.signature_scheme = signature_scheme
        self.username = username
        self.session_id = uuid.uuid4().hex
        self._hmac = hmac.new(key, digestmod=digest) if key else None
        self.replay_guard = ReplayGuard(replay_window)
        """The signatures seen recently: a message with one of them is a replay."""
        self._counter = itertools.count(1)
        self._id_prefix = f"{self.session_id[:8]}_{os.getpid()}_"

    # --- signing ---------------------------------------------------------------------------

    def sign(self, parts: list[bytes]) -> bytes:
        """Return the hex HMAC of the four JSON frames, or `b""` when signing is disabled."""
        if self._hmac is None:
            return b""
        mac = self._hmac.copy()
        for part in parts:
            mac.update(part)
        return mac.hexdigest().encode("ascii")

    def new_msg_id(self) -> str:
        """Return a message id unique to this session (cheaper than a uuid per message)."""
        return f"{self._id_prefix}{next(self._counter)}"

    def header(self, msg_type: str, **extra: Any) -> dict[str, Any]:
        """Return a new header for `msg_type`."""
        return {
            "msg_id": self.new_msg_id(),
            "msg_type": msg_type,
            "username": self.username,
            "session": self.session_id,
            "date": utcnow_iso(),
            "version": PROTOCOL_VERSION,
            **extra,
        }

    # --- encoding --------------------------------------------------------------------------

    def serialize(
        self,
        msg_type: str,
        content: dict[str, Any] | None = None,
        *,
        parent: Message | None = None,
        metadata: dict[str, Any] | None = None,
        idents: list[bytes] | None = None,
        buffers: Sequence[object] | None = None,
        header_extra: dict[str, Any] | None = None,
    ) -> list[Frame]:
        """Build, sign and frame a message, ready for `send_multipart`.

        Args:
            msg_type: The new message's type.
            content: Its content.
            parent: The message it answers; its raw header frame becomes the parent frame.
            metadata: Its metadata.
            idents: The routing identities to prepend (replies on ROUTER sockets).
            buffers: Binary buffers to append.
            header_extra: Extra header fields, e.g. `subshell_id`.

        Returns:
            The frames.
        """
        header = dumps(self.header(msg_type, **(header_extra or {})))
        parent_frame = parent.raw_header if parent is not None and parent.raw_header else _EMPTY
        meta = dumps(metadata) if metadata else _EMPTY
        body = dumps(content) if content else _EMPTY
        parts = [header, parent_frame, meta, body]
        frames: list[Frame] = [*(idents or ()), DELIMITER, self.sign(parts), *parts]
        if buffers:
            frames.extend(frame_of(b) for b in buffers)
        return frames

    def deserialize(self, frames: Sequence[Frame]) -> Message:
        """Verify and decode the frames of one message.

        The signature is checked before anything is decoded. A correctly signed message whose
        header is a JSON object with a string `msg_type` is returned even if the rest is
        malformed (not JSON, not objects, header fields of the wrong type): its `problem`
        says what is wrong.

        Raises:
            MessageError: The framing or signature is wrong, the message is a replay, or its
                header cannot be decoded.
        """
        try:
            split = frames.index(DELIMITER)
        except ValueError:
            raise MessageError("no <IDS|MSG> delimiter in the frames", kind="framing") from None
        rest = frames[split + 1 :]
        if len(rest) < 5:
            msg = f"truncated message: {len(rest)} frames after the delimiter, 5 needed"
            raise MessageError(msg, kind="framing")
        signature, header, parent, metadata, content = _envelope(rest[:5])
        if self._hmac is not None:
            if not signature:
                raise MessageError("unsigned message", kind="unsigned")
            if not hmac.compare_digest(signature, self.sign([header, parent, metadata, content])):
                raise MessageError("invalid signature", kind="signature")
            if not self.replay_guard.add(signature):
                msg = "replayed message: this signature was seen before"
                raise MessageError(msg, kind="replay")
        header_obj, problem = decode_object(header, "header")
        if problem is None and not isinstance(header_obj.get("msg_type"), str):
            problem = "the header has no msg_type string"
        if problem is not None:
            raise MessageError(f"{problem}: there is nothing to reply to", kind="header")
        parent_obj, parent_problem = decode_object(parent, "parent header")
        metadata_obj, metadata_problem = decode_object(metadata, "metadata")
        content_obj, content_problem = decode_object(content, "content")
        problems = [
            p
            for p in (
                _header_problem(header_obj),
                parent_problem,
                metadata_problem,
                content_problem,
            )
            if p is not None
        ]
        return Message(
            header=header_obj,
            parent_header=parent_obj,
            metadata=metadata_obj,
            content=content_obj,
            buffers=list(rest[5:]),
            idents=_envelope(frames[:split]),
            raw_header=header,
            problem="; ".join(problems) if problems else None,
        )

    # --- helpers for clients and tests -----------------------------------------------------

    def encode(self, msg: dict[str, Any], idents: list[bytes] | None = None) -> list[bytes]:
        """Frame a message given as a dict with header/parent_header/metadata/content keys."""
        parts = [
            dumps(msg.get("header", {})),
            dumps(msg.get("parent_header", {})),
            dumps(msg.get("metadata", {})),
            dumps(msg.get("content", {})),
        ]
        return [*(idents or ()), DELIMITER, self.sign(parts), *parts, *msg.get("buffers", ())]


def _envelope(frames: Sequence[Frame]) -> list[bytes]:
    """Frames that are decoded or quoted as they are (identities, signature, JSON) as `bytes`.

    They are `bytes` already when the socket received them (only buffers come as views).
    """
    return [f if type(f) is bytes else bytes(f) for f in frames]


def _header_problem(header: dict[str, Any]) -> str | None:
    """Say which of the header's fields has the wrong type, if one has."""
    if "msg_id" not in header:
        return "the header has no msg_id"
    for name in _STRING_HEADER_FIELDS:
        if name in header and not isinstance(header[name], str):
            return f"the header's {name} must be a string, not {json_kind(header[name])}"
    subshell_id = header.get("subshell_id")
    if subshell_id is not None and not isinstance(subshell_id, str):
        return f"the header's subshell_id must be a string or null, not {json_kind(subshell_id)}"
    return None
