"""Unit tests of `async_kernel.wire._session`: the wire format, signing, and refusing bad frames."""

from __future__ import annotations

import calendar
import datetime
import hashlib
import hmac
import json
import re
import time
import types

import pytest
from jupyter_client.session import Session as ClientSession
from signing import KEY, hex_hmac, signed

from async_kernel.wire import _session
from async_kernel.wire._session import (
    DELIMITER,
    PROTOCOL_VERSION,
    Message,
    MessageError,
    Session,
    signature_digest,
    utcnow_iso,
)


@pytest.fixture
def session() -> Session:
    return Session(KEY)


def split(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Return the identities and the frames after the delimiter."""
    i = frames.index(DELIMITER)
    return frames[:i], frames[i + 1 :]


# --- round trip -----------------------------------------------------------------------------


def test_round_trip(session: Session) -> None:
    frames = session.serialize(
        "execute_request",
        {"code": "1 + 1", "silent": False},
        metadata={"cellId": "abc"},
        idents=[b"client-a", b"client-b"],
        header_extra={"subshell_id": "sub-1"},
    )
    idents, rest = split(frames)
    assert idents == [b"client-a", b"client-b"]
    assert len(rest) == 5
    msg = Session(KEY).deserialize(frames)
    assert msg.msg_type == "execute_request"
    assert msg.content == {"code": "1 + 1", "silent": False}
    assert msg.metadata == {"cellId": "abc"}
    assert msg.parent_header == {}
    assert msg.idents == [b"client-a", b"client-b"]
    assert msg.buffers == []
    assert msg.raw_header == rest[1]
    header = msg.header
    assert header["subshell_id"] == "sub-1"
    assert header["version"] == PROTOCOL_VERSION
    assert header["session"] == session.session_id
    assert header["username"] == session.username
    assert msg.msg_id == header["msg_id"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", header["date"])


def test_dates_are_utc_with_microseconds_and_track_the_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fake clock for the module alone (not `time.time_ns` itself, which other threads use).
    now_ns = [0]
    formatted: list[float] = []

    def strftime(fmt: str, t: time.struct_time) -> str:
        formatted.append(calendar.timegm(t))
        return time.strftime(fmt, t)

    fake = types.SimpleNamespace(time_ns=lambda: now_ns[0], gmtime=time.gmtime, strftime=strftime)
    monkeypatch.setattr(_session, "time", fake)
    dates: list[str] = []
    for ns in (1_733_400_000_000_001_000, 1_733_400_000_999_999_000, 1_733_400_001_000_000_000):
        now_ns[0] = ns
        dates.append(utcnow_iso())
    assert dates == [
        "2024-12-05T12:00:00.000001Z",
        "2024-12-05T12:00:00.999999Z",
        "2024-12-05T12:00:01.000000Z",
    ]
    assert formatted == [1_733_400_000, 1_733_400_001]  # each second formatted once
    monkeypatch.undo()
    before = datetime.datetime.now(datetime.UTC)
    now = datetime.datetime.fromisoformat(utcnow_iso())
    after = datetime.datetime.now(datetime.UTC)
    assert before <= now <= after


def test_signature_is_the_hmac_of_the_four_json_frames(session: Session) -> None:
    _, rest = split(session.serialize("status", {"execution_state": "busy"}))
    signature, *parts = rest
    assert signature == hex_hmac(KEY, *parts)


def test_message_ids_are_unique(session: Session) -> None:
    ids = {session.new_msg_id() for _ in range(1000)}
    ids |= {Session(KEY).new_msg_id() for _ in range(10)}
    assert len(ids) == 1010


def test_encode_frames_a_message_dict(session: Session) -> None:
    msg = {
        "header": session.header("comm_msg"),
        "parent_header": {"msg_id": "p"},
        "metadata": {},
        "content": {"comm_id": "c", "data": {}},
        "buffers": [b"\x00\x01"],
    }
    decoded = Session(KEY).deserialize(session.encode(msg, idents=[b"id"]))
    assert decoded.header == msg["header"]
    assert decoded.parent_header == {"msg_id": "p"}
    assert decoded.content == msg["content"]
    assert decoded.buffers == [b"\x00\x01"]
    assert decoded.idents == [b"id"]


# --- refusing bad frames ----------------------------------------------------------------------


def test_wrong_signature_is_refused(session: Session) -> None:
    frames = session.serialize("kernel_info_request")
    i = frames.index(DELIMITER) + 1
    sig = frames[i]
    frames[i] = (b"0" if sig[:1] != b"0" else b"1") + sig[1:]
    with pytest.raises(MessageError, match="signature"):
        Session(KEY).deserialize(frames)


def test_message_signed_with_another_key_is_refused() -> None:
    frames = Session(b"another key").serialize("kernel_info_request")
    with pytest.raises(MessageError, match="signature"):
        Session(KEY).deserialize(frames)


def test_tampered_content_is_refused(session: Session) -> None:
    frames = session.serialize("execute_request", {"code": "1"})
    frames[-1] = b'{"code":"import os; os.abort()"}'
    with pytest.raises(MessageError, match="signature"):
        Session(KEY).deserialize(frames)


def test_unsigned_message_is_refused_when_a_key_is_set() -> None:
    frames = Session(b"").serialize("kernel_info_request")
    assert split(frames)[1][0] == b""
    with pytest.raises(MessageError, match="unsigned"):
        Session(KEY).deserialize(frames)


def test_replayed_message_is_refused(session: Session) -> None:
    frames = session.serialize("execute_request", {"code": "1"})
    receiver = Session(KEY)
    receiver.deserialize(list(frames))
    with pytest.raises(MessageError, match="replay"):
        receiver.deserialize(list(frames))
    # A fresh message with the same content has a new header, so a new signature.
    receiver.deserialize(session.serialize("execute_request", {"code": "1"}))


def test_replay_window_is_bounded(session: Session) -> None:
    receiver = Session(KEY, replay_window=2)
    first = session.serialize("kernel_info_request")
    receiver.deserialize(first)
    with pytest.raises(MessageError, match="replay"):
        receiver.deserialize(first)
    for _ in range(2):
        receiver.deserialize(session.serialize("kernel_info_request"))
    receiver.deserialize(first)  # forgotten: the memory does not grow without bound


def test_refused_signature_is_not_remembered(session: Session) -> None:
    """A forged message must not block the genuine one that carries the same signature."""
    frames = session.serialize("execute_request", {"code": "1"})
    forged = [*frames[:-1], b'{"code":"2"}']
    receiver = Session(KEY)
    with pytest.raises(MessageError):
        receiver.deserialize(forged)
    assert receiver.deserialize(frames).content == {"code": "1"}


@pytest.mark.parametrize("keep", [0, 1, 2, 3, 4])
def test_truncated_frames_are_refused(session: Session, keep: int) -> None:
    frames = session.serialize("kernel_info_request", idents=[b"id"])
    start = frames.index(DELIMITER) + 1
    with pytest.raises(MessageError, match="truncated"):
        Session(KEY).deserialize(frames[: start + keep])


def test_missing_delimiter_is_refused(session: Session) -> None:
    frames = session.serialize("kernel_info_request", idents=[b"id"])
    frames.remove(DELIMITER)
    with pytest.raises(MessageError, match="delimiter"):
        Session(KEY).deserialize(frames)
    with pytest.raises(MessageError, match="delimiter"):
        Session(KEY).deserialize([])


def test_message_error_is_a_value_error() -> None:
    assert issubclass(MessageError, ValueError)


SCHEMES = ["hmac-md5", "hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512"]
SCHEMES += ["hmac-sha3_256", "hmac-blake2b"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_signature_schemes_interoperate_with_jupyter_client(scheme: str) -> None:
    algorithm = scheme.removeprefix("hmac-")
    assert signature_digest(scheme) is getattr(hashlib, algorithm)
    client = ClientSession(key=KEY, signature_scheme=scheme)
    ours = Session(KEY, signature_scheme=scheme)
    request = client.msg("execute_request", {"code": "1"})
    frames = client.serialize(request, ident=[b"id"])
    assert ours.deserialize(frames).content == {"code": "1"}
    reply = ours.serialize("execute_reply", {"status": "ok"}, idents=[b"id"])
    _, rest = split(reply)
    assert (
        rest[0]
        == hmac.new(KEY, b"".join(rest[1:5]), getattr(hashlib, algorithm)).hexdigest().encode()
    )
    assert client.deserialize(client.feed_identities(reply)[1])["content"] == {"status": "ok"}
    # Another scheme with the same key is another signature.
    other = "hmac-sha256" if scheme != "hmac-sha256" else "hmac-sha512"
    with pytest.raises(MessageError, match="signature"):
        Session(KEY, signature_scheme=other).deserialize(client.serialize(request))


@pytest.mark.parametrize(
    "scheme",
    [
        "hmac-nope",
        "sha256",  # no hmac- prefix
        "hmac-",
        "hmac-SHA256",  # hashlib's attributes are lower case
        "hmac-new",  # a hashlib function, not an algorithm
        "hmac-shake_128",  # no fixed digest size: an HMAC cannot use it
        "hmac-sha512_224",  # known to OpenSSL, but no hashlib attribute (jupyter_client refuses it)
        "rsa-sha256",
    ],
)
def test_unsupported_signature_scheme(scheme: str) -> None:
    with pytest.raises(ValueError, match=r"unsupported signature scheme .*hmac-sha256"):
        signature_digest(scheme)
    with pytest.raises(ValueError, match="unsupported signature scheme"):
        Session(KEY, signature_scheme=scheme)
    with pytest.raises(ValueError, match="unsupported signature scheme"):
        Session(b"", signature_scheme=scheme)  # refused even unsigned, as jupyter_client does


# --- an empty key -----------------------------------------------------------------------------


def test_empty_key_means_no_signing() -> None:
    plain = Session(b"")
    frames = plain.serialize("execute_request", {"code": "x"})
    _, rest = split(frames)
    assert rest[0] == b""
    assert plain.sign(rest[1:]) == b""
    assert Session(b"").deserialize(frames).content == {"code": "x"}
    # Without a key the signature is not looked at.
    frames[frames.index(DELIMITER) + 1] = b"whatever"
    assert Session(b"").deserialize(frames).content == {"code": "x"}


# --- buffers and parents ---------------------------------------------------------------------


def test_binary_buffers_round_trip(session: Session) -> None:
    buffers = [b"\x00\xff\x00", bytes(range(256)), b""]
    frames = session.serialize(
        "comm_msg",
        {"comm_id": "c", "data": {}},
        buffers=[buffers[0], memoryview(buffers[1]), bytearray(buffers[2])],  # type: ignore[list-item]
    )
    assert frames[-3:] == buffers
    # bytes and views of bytes are sent as they are; anything writable is copied now.
    assert type(frames[-2]) is memoryview
    assert all(type(f) is bytes for f in frames[:-2] + frames[-1:])
    msg = Session(KEY).deserialize(frames)
    assert msg.buffers == buffers
    assert msg.content == {"comm_id": "c", "data": {}}


def test_a_writable_buffer_is_sent_as_it_was_when_handed_over(session: Session) -> None:
    data = bytearray(b"before")
    frames = session.serialize("comm_msg", {"comm_id": "c"}, buffers=[data, memoryview(data)])
    data[:] = b"after!"
    assert frames[-2:] == [b"before", b"before"]


def test_buffers_are_not_signed(session: Session) -> None:
    frames = session.serialize("comm_msg", {"comm_id": "c"}, buffers=[b"one"])
    frames[-1] = b"two"
    assert Session(KEY).deserialize(frames).buffers == [b"two"]


def test_parent_frame_is_the_raw_header_verbatim(session: Session) -> None:
    # Unusual spacing, key order, escapes and a float that a re-encoder would not keep.
    raw = (
        b'{ "msg_type" : "execute_request",  "msg_id":"p-1", "session": "s\\u00e9",'
        b' "date": "2024-01-01T00:00:00.000000Z", "extra": 1.50, "username": "u", '
        b'"version": "5.3" }'
    )
    request = Session(KEY).deserialize(signed(KEY, raw, b"{}", b"{}", b"{}"))
    assert request.raw_header == raw
    frames = session.serialize("execute_reply", {"status": "ok"}, parent=request)
    _, rest = split(frames)
    assert rest[2] == raw
    reply = Session(KEY).deserialize(frames)
    assert reply.parent_header == json.loads(raw)


def test_parent_without_raw_header_gives_an_empty_parent(session: Session) -> None:
    parent = Message(header={"msg_id": "x"}, parent_header={}, metadata={}, content={})
    _, rest = split(session.serialize("status", {}, parent=parent))
    assert rest[2] == b"{}"


def test_values_orjson_does_not_know_are_encoded(session: Session) -> None:
    content = {"blob": b"\x00\x01", "set": {3}, "tuple": (1, 2), "complex": 1j, "obj": object}
    decoded = Session(KEY).deserialize(session.serialize("x", content)).content
    assert decoded["blob"] == "AAE="
    assert decoded["set"] == [3]
    assert decoded["tuple"] == [1, 2]
    assert decoded["complex"] == "1j"
    assert decoded["obj"] == repr(object)


# --- interoperability with jupyter_client -------------------------------------------------------


def test_jupyter_client_reads_our_messages(session: Session) -> None:
    client = ClientSession(key=KEY, signature_scheme="hmac-sha256")
    request = Session(KEY).deserialize(
        client.serialize(client.msg("execute_request", {"code": "1"}), ident=[b"id"])
    )
    frames = session.serialize(
        "execute_reply",
        {"status": "ok", "execution_count": 3},
        parent=request,
        metadata={"started": "now"},
        idents=[b"id"],
        buffers=[b"\x01\x02"],
    )
    idents, msg_list = client.feed_identities(frames)
    assert idents == [b"id"]
    msg = client.deserialize(msg_list)
    assert msg["msg_type"] == "execute_reply"
    assert msg["content"] == {"status": "ok", "execution_count": 3}
    assert msg["metadata"] == {"started": "now"}
    assert msg["parent_header"]["msg_id"] == request.msg_id
    assert [bytes(b) for b in msg["buffers"]] == [b"\x01\x02"]
    # jupyter_client keeps its own replay guard, and it refuses the same frames twice.
    with pytest.raises(ValueError, match="Duplicate"):
        client.deserialize(client.feed_identities(frames)[1])


def test_we_read_jupyter_client_messages(session: Session) -> None:
    client = ClientSession(key=KEY, signature_scheme="hmac-sha256")
    parent = client.msg("kernel_info_request")
    out = client.msg(
        "comm_msg", {"comm_id": "c", "data": {"x": 1}}, parent=parent, metadata={"m": True}
    )
    frames = [*client.serialize(out, ident=b"router-id"), b"buffer"]
    msg = session.deserialize(frames)
    assert msg.idents == [b"router-id"]
    assert msg.msg_type == "comm_msg"
    assert msg.msg_id == out["header"]["msg_id"]
    assert msg.content == {"comm_id": "c", "data": {"x": 1}}
    assert msg.metadata == {"m": True}
    assert msg.parent_header["msg_id"] == parent["header"]["msg_id"]
    assert msg.buffers == [b"buffer"]
    with pytest.raises(MessageError, match="replay"):
        session.deserialize(frames)


def test_jupyter_client_refuses_a_wrong_key(session: Session) -> None:
    client = ClientSession(key=b"not the key", signature_scheme="hmac-sha256")
    frames = session.serialize("status", {"execution_state": "idle"})
    with pytest.raises(ValueError, match="Invalid Signature"):
        client.deserialize(client.feed_identities(frames)[1])
    with pytest.raises(MessageError, match="signature"):
        session.deserialize(client.serialize(client.msg("kernel_info_request")))


def test_unsigned_interoperability() -> None:
    client = ClientSession(key=b"")
    ours = Session(b"")
    assert ours.deserialize(client.serialize(client.msg("kernel_info_request"))).msg_type == (
        "kernel_info_request"
    )
    msg = client.deserialize(client.feed_identities(ours.serialize("status", {"a": 1}))[1])
    assert msg["content"] == {"a": 1}
