"""Fuzzing the WebSocket frames of ``/ws/dm/{account}/`` on a real daphne process.

Hypothesis draws one client frame per example from every shape PROTOCOL.md must
survive: random JSON, non-JSON text, wrong field types, huge numbers, deep nesting,
lone surrogates, binary and empty frames, frames over 64 KiB and over the 1 MiB hard
cap, and valid frames with one field broken. Valid frames are drawn too, so that the
near-valid ones sit next to the paths that really store messages.

After every frame the socket must still answer ``ping`` with ``pong`` (a frame over the
hard cap, or a text frame that is not UTF-8, may drop the connection; then we
reconnect). At the end: no traceback or ERROR in the server's log, no ``internal``
error frame, and the room holds exactly the messages that valid frames stored.

The server runs with the live tests' raised send limit (``DM_SEND_RATE_LIMIT`` from
``tests.support.server_env``); a ``rate_limited`` error is a valid answer all the same.

    FUZZ_FRAMES=10000 .venv/bin/pytest tests/reliability/test_fuzz_frames.py -s   # or make fuzz
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.support import LiveServer, http_json, signup

FRAMES = int(os.environ.get("FUZZ_FRAMES", "300"))
FRAME_MAX = 64 * 1024  # DM_FRAME_MAX_BYTES, the server's default
HARD_CAP = 1024 * 1024  # daphne's maximum message size
MESSAGE_MAX = 1000
TYPES = [
    "message.send",
    "message.edit",
    "message.unsend",
    "reaction.set",
    "reaction.clear",
    "read",
    "typing",
    "sync",
    "ping",
]
FIELDS = ["type", "client_id", "message", "attachment_ids", "reply_to", "id", "emoji"]
FIELDS += ["seq", "active", "after", "sender", "room"]
# Answers that carry no `error` or `message.ack` and that the socket may get at any time.
EVENTS = {"message.new", "message.updated", "seen", "typing", "presence", "sync.done"}
WEIGHTS = {
    "valid": 20,
    "near_valid": 24,
    "known_type_random_fields": 10,
    "huge_numbers": 6,
    "object_random_fields": 6,
    "random_json": 6,
    "not_json": 4,
    "lone_surrogate": 4,
    "binary": 4,
    "empty": 3,
    "nan_and_infinity": 2,
    "deep_nesting": 2,
    "deep_nesting_in_field": 2,
    "invalid_utf8_text": 2,
    "over_64k": 4,
    "over_1mib": 1,
}
LOG_PROBLEMS = re.compile(r"Traceback|Exception|\bERROR\b|\bCRITICAL\b")


# --- What to send ----------------------------------------------------------------------


@dataclass
class Frame:
    category: str
    data: str | bytes
    text: bool = True  # a text frame (data may still be bytes: then sent as they are)


@dataclass
class State:
    """What the server told us so far, so that drawn ids and seqs can be real ones."""

    my_ids: list[int] = field(default_factory=list)
    their_ids: list[int] = field(default_factory=list)
    last_seq: int = 0


big_ints = st.one_of(
    st.integers(),
    st.sampled_from([2**31, 2**31 - 1, 2**32, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30]),
    st.integers(min_value=2**63, max_value=10**400),
    st.integers(max_value=-(2**63), min_value=-(10**400)),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    big_ints,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(TYPES),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(
            st.one_of(st.sampled_from(FIELDS), st.text(max_size=10)), inner, max_size=6
        ),
    ),
    max_leaves=25,
)
wrong_values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
    st.floats(),  # NaN and infinities: json.dumps writes them, JSON has no such thing
    st.just("x" * (MESSAGE_MAX + 1)),
    st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=3),  # lone surrogates
)


def encode(value: Any) -> str:
    """JSON text; lone surrogates become ``\\udxxx`` escapes, NaN becomes ``NaN``."""
    return json.dumps(value)


def ids(state: State) -> st.SearchStrategy[int]:
    """Mostly ids the server gave out (mine or theirs), sometimes any integer.

    The choice is made by index at draw time, so the strategy's shape never depends on
    what the server said: Hypothesis replays examples and insists on that.
    """

    def pick(i: int) -> int:
        known = state.my_ids[-50:] + state.their_ids
        return known[i % len(known)]

    return st.integers(0, 2**16).map(pick) | big_ints


texts = st.one_of(
    st.text(min_size=1, max_size=MESSAGE_MAX),
    st.sampled_from(
        ["\x00", "a\x00b", " ", "\u2028", "\ufeff", "🙂" * MESSAGE_MAX, "x" * MESSAGE_MAX]
    ),
)


@st.composite
def valid_frames(draw: st.DrawFn, state: State) -> dict[str, Any]:
    kind = draw(st.sampled_from(["message.send", *TYPES, "message.send"]))
    frame: dict[str, Any] = {"type": kind}
    if kind == "message.send":
        # Hypothesis's own uuids repeat (retries); uuid4 ones are new messages.
        frame["client_id"] = str(draw(st.uuids() | st.builds(uuid.uuid4)))
        frame["message"] = draw(texts)
        if draw(st.booleans()):
            frame["reply_to"] = draw(ids(state))
    elif kind == "message.edit":
        frame["id"] = draw(ids(state))
        frame["message"] = draw(texts)
    elif kind in ("message.unsend", "reaction.clear"):
        frame["id"] = draw(ids(state))
    elif kind == "reaction.set":
        frame["id"] = draw(ids(state))
        frame["emoji"] = draw(st.sampled_from(["❤️", "😂", "👍", "🔥", "x", "❤️❤️"]))
    elif kind == "read":
        frame["seq"] = draw(st.integers(0, 2**16).map(lambda i: i % (state.last_seq + 4)))
    elif kind == "typing":
        frame["active"] = draw(st.booleans())
    elif kind == "sync":
        frame["after"] = draw(
            st.integers(min_value=0).map(lambda i: max(0, state.last_seq - 5) + i)
        )
    return frame


@st.composite
def near_valid_frames(draw: st.DrawFn, state: State) -> dict[str, Any]:
    """A valid frame with one thing wrong: a field dropped, retyped, or an extra one."""
    frame = draw(valid_frames(state))
    frame.setdefault("client_id", str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))))
    how = draw(st.sampled_from(["retype", "drop", "extra", "client_id", "empty"]))
    name = draw(st.sampled_from(sorted(frame)))
    if how == "retype":
        frame[name] = draw(wrong_values)
    elif how == "drop":
        del frame[name]
    elif how == "extra":
        frame[draw(st.sampled_from(FIELDS))] = draw(json_values)
    elif how == "client_id":
        frame["client_id"] = draw(
            st.sampled_from(["", "not-a-uuid", "0" * 31, "g" * 32, str(uuid.uuid4()) + "0"])
            | st.text(max_size=40)
        )
    else:
        frame["message"] = draw(st.sampled_from(["", "x" * (MESSAGE_MAX + 1)]))
    return frame


def padded(kind: str, size: int) -> str:
    """A JSON frame of about ``size`` bytes."""
    return encode({"type": kind, "client_id": str(uuid.uuid4()), "message": "x" * size})


def frames(state: State) -> st.SearchStrategy[Frame]:
    def text(category: str, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Frame]:
        return strategy.map(lambda v: Frame(category, v if isinstance(v, str) else encode(v)))

    nesting = st.tuples(st.sampled_from("[{"), st.integers(1, 20_000)).map(
        lambda t: "[" * t[1] + "]" * t[1] if t[0] == "[" else '{"type":' * t[1] + "0" + "}" * t[1]
    )
    categories: dict[str, st.SearchStrategy[Frame]] = dict(
        valid=text("valid", valid_frames(state)),
        near_valid=text("near_valid", near_valid_frames(state)),
        random_json=text("random_json", json_values),
        object_random_fields=text(
            "object_random_fields", st.dictionaries(st.sampled_from(FIELDS), json_values)
        ),
        known_type_random_fields=text(
            "known_type_random_fields",
            st.builds(
                lambda kind, rest: {**rest, "type": kind},
                st.sampled_from(TYPES),
                st.dictionaries(st.sampled_from(FIELDS), wrong_values, max_size=4),
            ),
        ),
        not_json=text("not_json", st.text(max_size=200)),
        nan_and_infinity=text(
            "nan_and_infinity",
            st.lists(st.sampled_from(["NaN", "Infinity", "-Infinity"])).map(
                lambda v: '{"type": "read", "seq": ' + (v[0] if v else "NaN") + "}"
            ),
        ),
        lone_surrogate=text(
            "lone_surrogate",
            st.builds(
                lambda s, kind: encode(
                    {"type": kind, "client_id": str(uuid.uuid4()), "message": s, "emoji": s}
                ),
                st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=4)
                | st.builds(
                    lambda a, b: a + b,
                    st.text(max_size=5),
                    st.text(alphabet=st.characters(categories=["Cs"]), min_size=1),
                ),
                st.sampled_from(["message.send", "reaction.set", "message.edit"]),
            ),
        ),
        deep_nesting=text("deep_nesting", nesting),
        deep_nesting_in_field=text(
            "deep_nesting_in_field",
            st.integers(1, 3000).map(lambda n: '{"type": "ping", "x": ' + "[" * n + "]" * n + "}"),
        ),
        empty=text("empty", st.sampled_from(["", " ", "\n", "{}", "[]", "null", '""', "0"])),
        binary=st.binary(max_size=300).map(lambda b: Frame("binary", b, text=False)),
        invalid_utf8_text=st.binary(min_size=1, max_size=300)
        .map(lambda b: b"\xff" + b)
        .map(lambda b: Frame("invalid_utf8_text", b, text=True)),
        over_64k=st.integers(FRAME_MAX - 100, HARD_CAP - 2000).map(
            lambda n: Frame("over_64k", padded("message.send", n))
        ),
        over_1mib=st.integers(HARD_CAP + 1, HARD_CAP + 5000).map(
            lambda n: Frame("over_1mib", padded("ping", n))
        ),
        huge_numbers=text(
            "huge_numbers",
            st.builds(
                lambda kind, name, n: {"type": kind, name: n, "client_id": str(uuid.uuid4())},
                st.sampled_from(TYPES),
                st.sampled_from(["id", "seq", "after", "reply_to", "attachment_ids"]),
                st.one_of(big_ints, st.lists(big_ints, min_size=1, max_size=3)),
            ),
        ),
    )
    # Weights out of 100: mostly frames near the valid ones, a few of the costly kinds.
    weighted = [name for name, weight in WEIGHTS.items() for _ in range(weight)]
    return st.sampled_from(weighted).flatmap(categories.__getitem__)


# --- The oracle ------------------------------------------------------------------------


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def protocol_valid(frame: Frame) -> bool:
    """Whether PROTOCOL.md lets this frame change anything: a text frame of at most
    64 KiB of UTF-8, a JSON object of a known type whose fields have their JSON types.
    Written from the contract, not from the server's schemas, to judge them."""
    if not frame.text or isinstance(frame.data, bytes):
        return False
    try:
        size = len(frame.data.encode("utf-8"))
        content = json.loads(frame.data, parse_constant=no_constants)
        json.dumps(content, ensure_ascii=False).encode("utf-8")  # no lone surrogates
    except (ValueError, RecursionError):
        return False
    if size > FRAME_MAX or not isinstance(content, dict) or content.get("type") not in TYPES:
        return False
    kind = content["type"]
    if kind == "message.send":
        client_id, message = content.get("client_id"), content.get("message", "")
        attachments = content.get("attachment_ids", [])
        reply_to = content.get("reply_to")
        try:
            uuid.UUID(client_id)
        except (TypeError, ValueError, AttributeError):
            return False
        return (
            isinstance(message, str)
            and len(message) <= MESSAGE_MAX
            and isinstance(attachments, list)
            and all(is_int(a) for a in attachments)
            and (message != "" or attachments != [])
            and (reply_to is None or is_int(reply_to))
        )
    return True  # the rest store no messages: judged by the server's answers only


# --- The run ---------------------------------------------------------------------------


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    pongs: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    rows_valid: set[int] = field(default_factory=set)
    rows_invalid: list[tuple[str, str]] = field(default_factory=list)
    internal: list[tuple[str, str]] = field(default_factory=list)
    silent: list[tuple[str, str]] = field(default_factory=list)  # invalid, no error frame
    dropped_wrongly: list[tuple[str, str]] = field(default_factory=list)


class Fuzzer:
    def __init__(self, server: LiveServer, me: dict[str, Any], other: dict[str, Any]) -> None:
        self.url = f"{server.ws}/ws/dm/{other['account']}/"
        self.token = me["token"]
        self.state = State()
        self.tally = Tally()
        self.probes = 0
        self.ws = self.open()

    def open(self) -> ClientConnection:
        ws = connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {self.token}"},
            compression=None,
            proxy=None,
            max_size=None,
            ping_interval=None,
            legacy=True,  # a plain connection object: reconnects replace it
        )
        joined = json.loads(ws.recv(timeout=10))
        assert joined["type"] == "room.joined", joined
        self.state.last_seq = joined["last_seq"]
        return ws

    def send(self, frame: Frame) -> None:
        """Send ``frame``, a ping and a probe; judge what came back before the probe."""
        self.tally.sent[frame.category] += 1
        self.probes += 1
        probe = f"probe-{self.probes}"
        try:
            self.ws.send(frame.data, text=frame.text)
            self.ws.send('{"type": "ping"}')
            # An unknown type: its error frame carries the probe's client_id as `ref`.
            self.ws.send(json.dumps({"type": "probe", "client_id": probe}))
            answers = self.read_until(probe)
        except ConnectionClosed as closed:
            self.dropped(frame, closed)
            return
        assert frame.category != "over_1mib", "a frame over the hard cap was accepted"
        self.judge(frame, answers)

    def read_until(self, probe: str) -> list[dict[str, Any]]:
        answers = []
        while True:
            answer = json.loads(self.ws.recv(timeout=20))
            if answer["type"] == "error" and answer["ref"] == probe:
                return answers
            if answer["type"] == "message.new":
                self.state.last_seq = max(self.state.last_seq, answer["message"]["seq"])
            answers.append(answer)

    def judge(self, frame: Frame, answers: list[dict[str, Any]]) -> None:
        tally, valid = self.tally, protocol_valid(frame)
        shown = frame.data[:200] if isinstance(frame.data, str) else repr(frame.data[:200])
        pongs = sum(a["type"] == "pong" for a in answers)
        assert pongs >= 1, f"no pong after a {frame.category} frame: {shown}"
        tally.pongs += 1
        errors = [a for a in answers if a["type"] == "error"]
        for ack in (a for a in answers if a["type"] == "message.ack"):
            if ack["id"] in tally.rows_valid or ack["id"] in self.state.their_ids:
                continue  # a retry's answer: the original, nothing new stored
            if valid:
                tally.rows_valid.add(ack["id"])
                self.state.my_ids.append(ack["id"])
                self.state.last_seq = max(self.state.last_seq, ack["seq"])
            else:
                tally.rows_invalid.append((frame.category, shown))
        for error in errors:
            tally.answers[f"error.{error['code']}"] += 1
            if error["code"] == "internal":
                tally.internal.append((frame.category, shown))
        tally.answers.update(a["type"] for a in answers if a["type"] != "error")
        if not valid and not errors:
            tally.silent.append((frame.category, shown))

    def dropped(self, frame: Frame, closed: ConnectionClosed) -> None:
        """Only a frame over the hard cap, or a text frame that is not UTF-8 (RFC 6455
        says close with 1007), may end the connection."""
        code = closed.rcvd.code if closed.rcvd else None
        self.tally.drops[f"{frame.category}:{code}"] += 1
        self.ws = self.open()
        if frame.category not in ("over_1mib", "invalid_utf8_text"):
            shown = frame.data[:200] if isinstance(frame.data, str) else repr(frame.data[:200])
            self.tally.dropped_wrongly.append((frame.category, f"{code}: {shown}"))


def server_log_problems(server: LiveServer) -> list[str]:
    assert server.log_path is not None
    text = server.log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if LOG_PROBLEMS.search(line)]


def report(fuzzer: Fuzzer, problems: list[str], rows_in_room: int, seconds: float) -> str:
    tally = fuzzer.tally
    lines = [
        f"frame fuzzing: {sum(tally.sent.values())} frames in {seconds:.0f} s",
        "  by category: " + ", ".join(f"{k} {v}" for k, v in tally.sent.most_common()),
        "  answers: " + ", ".join(f"{k} {v}" for k, v in tally.answers.most_common()),
        f"  pings answered: {tally.pongs}; connections dropped: {dict(tally.drops) or 0}",
        f"  unhandled exceptions (log lines, internal errors): {len(problems)}, "
        f"{len(tally.internal)}",
        f"  rows created by invalid frames: {len(tally.rows_invalid)}; "
        f"by valid frames: {len(tally.rows_valid)}; in the room: {rows_in_room}",
        f"  invalid frames without an error answer: {len(tally.silent)}",
    ]
    return "\n".join(lines)


@pytest.mark.live
def test_fuzzed_frames_never_break_the_socket_or_store_anything(asgi_server: LiveServer) -> None:
    alice, bob = signup(asgi_server.http), signup(asgi_server.http)
    theirs = []
    for text in ("one", "two", "three"):  # ids alice may reply to but not edit
        status, body = http_json(
            "POST",
            f"{asgi_server.http}/api/dm/{alice['account']}/messages",
            {"client_id": str(uuid.uuid4()), "message": text},
            token=bob["token"],
        )
        assert status == 201, body
        theirs.append(body["id"])
    fuzzer = Fuzzer(asgi_server, alice, bob)
    fuzzer.state.their_ids = theirs
    started = time.monotonic()

    @settings(
        max_examples=FRAMES,
        deadline=None,
        database=None,
        derandomize="FUZZ_FRAMES" not in os.environ,  # the short run is the same every time
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def one_frame(data: st.DataObject) -> None:
        fuzzer.send(data.draw(frames(fuzzer.state), label="frame"))

    try:
        one_frame()
    finally:
        fuzzer.ws.close()
        problems = server_log_problems(asgi_server)
        last = fuzzer.open()
        rows_in_room = fuzzer.state.last_seq - len(theirs)
        last.close()
        print("\n" + report(fuzzer, problems, rows_in_room, time.monotonic() - started))
    tally = fuzzer.tally
    assert problems == [], "\n".join(problems[:20])
    assert tally.internal == [], tally.internal[:5]
    assert tally.dropped_wrongly == [], tally.dropped_wrongly[:5]
    assert tally.rows_invalid == [], tally.rows_invalid[:5]
    assert tally.silent == [], tally.silent[:5]
    assert rows_in_room == len(tally.rows_valid)
    assert tally.pongs == sum(tally.sent.values()) - sum(tally.drops.values())


# --- Regressions: what the fuzzer found ------------------------------------------------


async def joined(ws_connect: Any, user: Any, account: str) -> Any:
    ws = await ws_connect(f"/ws/dm/{account}/", user)
    assert (await ws.receive_json_from(timeout=5))["type"] == "room.joined"
    return ws


async def answers_until_pong(ws: Any) -> list[dict[str, Any]]:
    await ws.send_json_to({"type": "ping"})
    answers = []
    while (answer := await ws.receive_json_from(timeout=5))["type"] != "pong":
        answers.append(answer)
    return answers


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "raw",
    [
        '{"type": {"type": 0}}',  # unhashable: TypeError in the type check
        '{"type": ["ping"]}',
        '{"type": ' * 1000 + "0" + "}" * 1000,  # deeper than repr() can go
        '{"type": 7}',
    ],
)
async def test_a_type_that_is_not_a_string_is_invalid(
    alice: Any, bob: Any, ws_connect: Any, raw: str
) -> None:
    ws = await joined(ws_connect, alice, "bob")
    await ws.send_to(text_data=raw)
    [error] = await answers_until_pong(ws)
    assert error["type"] == "error" and error["code"] == "invalid", error
    assert error["detail"] == "type: must be a string"


@pytest.mark.django_db(transaction=True)
async def test_an_internal_failure_on_a_deeply_nested_frame_keeps_the_socket(
    alice: Any, bob: Any, ws_connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from direct_messages import consumers

    def broken(content: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(consumers, "parse_frame", broken)
    ws = await joined(ws_connect, alice, "bob")
    await ws.send_to(text_data='{"type": ' * 1000 + "0" + "}" * 1000)
    error = await ws.receive_json_from(timeout=5)
    assert error["type"] == "error" and error["code"] == "internal", error
    monkeypatch.undo()
    assert await answers_until_pong(ws) == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("text", ["\x00", "a\x00b"])
async def test_a_message_with_nul_is_invalid_not_an_internal_error(
    alice: Any, bob: Any, ws_connect: Any, text: str
) -> None:
    """PostgreSQL refuses NUL in text columns: the send was a 500 / `internal`."""
    from asgiref.sync import sync_to_async

    from direct_messages.models import DirectMessage

    ws = await joined(ws_connect, alice, "bob")
    client_id = str(uuid.uuid4())
    await ws.send_json_to({"type": "message.send", "client_id": client_id, "message": text})
    [error] = await answers_until_pong(ws)
    assert error == {
        "type": "error",
        "code": "invalid",
        "detail": "message: must not contain NUL (U+0000)",
        "ref": client_id,
    }
    assert await sync_to_async(DirectMessage.objects.count)() == 0
