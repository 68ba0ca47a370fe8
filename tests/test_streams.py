"""Tests for the output streams: batching, ordering, routing, timed flushes, fd capture."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import threading
import time
import warnings
from typing import TYPE_CHECKING

import pytest

import async_kernel.output._streams
from async_kernel._enums import Channel
from async_kernel.output._routing import output_to
from async_kernel.output._streams import FDCapture, OutStream
from async_kernel.wire._job import Job, current_job
from async_kernel.wire._session import Message

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ()

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="fd capture is POSIX only")


class Recorder:
    """A `publish` callback that records its calls and can wait for them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Job | None]] = []
        self.threads: list[threading.Thread] = []
        self.cond = threading.Condition()

    def __call__(self, name: str, text: str, parent: Job | None) -> None:
        with self.cond:
            self.calls.append((name, text, parent))
            self.threads.append(threading.current_thread())
            self.cond.notify_all()

    @property
    def text(self) -> str:
        return "".join(text for _, text, _ in self.calls)

    def wait_for_text(self, expected: str, timeout: float = 10) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.text == expected, timeout)


def make_job() -> Job:
    msg = Message(header={}, parent_header={}, metadata={}, content={})
    return Job(msg=msg, channel=Channel.shell)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def stream(recorder: Recorder) -> Iterator[OutStream]:
    # A long interval, so that only explicit and max_buffer flushes happen during a test.
    out = OutStream("stdout", recorder, flush_interval=60)
    yield out
    out.close()


def test_all_names_exist() -> None:
    for name in async_kernel.output._streams.__all__:
        assert hasattr(async_kernel.output._streams, name)


def test_many_small_writes_become_few_publishes(stream: OutStream, recorder: Recorder) -> None:
    with output_to(make_job()):
        for i in range(200_000):
            print("line", i, file=stream)
        stream.flush()
    assert len(recorder.calls) <= 10
    assert recorder.text == "".join(f"line {i}\n" for i in range(200_000))


def test_threads_released_together_lose_nothing(stream: OutStream, recorder: Recorder) -> None:
    n_threads, n_lines = 8, 2_000
    barrier = threading.Barrier(n_threads)

    def work(t: int) -> None:
        barrier.wait(timeout=30)
        for i in range(n_lines):
            stream.write(f"{t}:{i}\n")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    stream.flush()
    lines = recorder.text.splitlines()
    assert sorted(lines) == sorted(f"{t}:{i}" for t in range(n_threads) for i in range(n_lines))
    for t in range(n_threads):
        mine = [line for line in lines if line.startswith(f"{t}:")]
        assert mine == [f"{t}:{i}" for i in range(n_lines)], "one thread's lines were reordered"


@pytest.fixture
def frequent_switches() -> Iterator[None]:
    """Make the interpreter switch threads very often, so that races show up."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("frequent_switches")
def test_concurrent_flushes_neither_reorder_nor_duplicate(recorder: Recorder) -> None:
    def publish(name: str, text: str, parent: Job | None) -> None:
        time.sleep(0)  # not for ordering: lets another flusher run between take and publish
        recorder(name, text, parent)

    stream = OutStream("stdout", publish, flush_interval=60)
    n_lines = 20_000
    barrier = threading.Barrier(5)
    done = threading.Event()

    def write() -> None:
        barrier.wait(timeout=30)
        for i in range(n_lines):
            stream.write(f"{i}\n")
        done.set()

    def flush() -> None:
        barrier.wait(timeout=30)
        while not done.is_set():
            stream.flush()

    threads = [threading.Thread(target=write)] + [threading.Thread(target=flush) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    stream.flush()
    assert len(recorder.calls) > 1, "the flushers never overlapped the writer"
    assert recorder.text == "".join(f"{i}\n" for i in range(n_lines))


def test_runs_keep_their_parent_and_order(stream: OutStream, recorder: Recorder) -> None:
    a, b = make_job(), make_job()
    for i in range(6):
        with output_to(a if i % 2 == 0 else b):
            stream.write(f"x{i}")
            stream.write(f"y{i}")
    token = current_job.set(a)
    try:
        stream.write("last")
    finally:
        current_job.reset(token)
    stream.flush()
    assert [(text, parent) for _, text, parent in recorder.calls] == [
        ("x0y0", a),
        ("x1y1", b),
        ("x2y2", a),
        ("x3y3", b),
        ("x4y4", a),
        ("x5y5", b),
        ("last", a),
    ]
    assert all(name == "stdout" for name, _, _ in recorder.calls)


def test_parent_is_compared_by_identity(stream: OutStream, recorder: Recorder) -> None:
    a, b = make_job(), make_job()
    assert a.msg == b.msg
    with output_to(a):
        stream.write("a")
    with output_to(b):
        stream.write("b")
    stream.flush()
    assert [parent for _, _, parent in recorder.calls] == [a, b]
    assert recorder.calls[0][2] is a
    assert recorder.calls[1][2] is b


def test_timed_flush_without_explicit_flush(recorder: Recorder) -> None:
    out = OutStream("stderr", recorder, flush_interval=0.01)
    with output_to(make_job()):
        out.write("hello ")
        out.write("world")
    assert recorder.wait_for_text("hello world"), "the timed flush never came"
    assert recorder.calls[0][0] == "stderr"
    assert recorder.threads[0] is not threading.current_thread()
    # A later write arms the timer again.
    out.write("!")
    assert recorder.wait_for_text("hello world!")


def test_one_flusher_thread_serves_all_streams() -> None:
    first, second = Recorder(), Recorder()
    outs = [OutStream("stdout", first, flush_interval=0.01)]
    outs.append(OutStream("stderr", second, flush_interval=0.01))
    for out in outs:
        out.write("a")
    assert first.wait_for_text("a")
    assert second.wait_for_text("a")
    outs[0].write("b")
    assert first.wait_for_text("ab")
    threads = {*first.threads, *second.threads}
    assert len(threads) == 1
    assert threads.pop().daemon


def test_max_buffer_flushes_at_once_in_the_writer(recorder: Recorder) -> None:
    out = OutStream("stdout", recorder, flush_interval=60, max_buffer=10)
    out.write("0123456789")
    assert recorder.calls == []
    out.write("a")
    assert recorder.text == "0123456789a"
    assert recorder.threads == [threading.current_thread()]


def test_publish_raising_is_logged_and_later_output_arrives(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    failures = [RuntimeError("socket gone")]

    def publish(name: str, text: str, parent: Job | None) -> None:
        if failures:
            raise failures.pop()
        recorder(name, text, parent)

    out = OutStream("stdout", publish, flush_interval=60)
    with caplog.at_level(logging.ERROR, logger="async_kernel"):
        out.write("lost")
        out.flush()
    assert any("socket gone" in (r.exc_text or "") for r in caplog.records)
    out.write("later")
    out.flush()
    assert recorder.text == "later"


def test_publish_that_writes_to_its_own_stream_does_not_deadlock(recorder: Recorder) -> None:
    echoed = threading.Event()

    def publish(name: str, text: str, parent: Job | None) -> None:
        recorder(name, text, parent)
        if not echoed.is_set():
            echoed.set()
            out.write("from publish")
            out.flush()  # re-entrant: returns, the timed flush sends it

    out = OutStream("stdout", publish, flush_interval=0.01)
    out.write("first ")
    out.flush()
    assert recorder.wait_for_text("first from publish")


@posix_only
def test_forked_child_does_not_publish_the_parents_buffer(
    stream: OutStream, recorder: Recorder
) -> None:
    stream.write("before fork")
    with warnings.catch_warnings():
        # Python >= 3.12 warns about forking with threads running; the child runs no threads.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            stream.write("child")
            stream.flush()
            code = 0 if recorder.text == "child" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    stream.flush()
    assert recorder.text == "before fork"


def test_file_like_surface(stream: OutStream, recorder: Recorder) -> None:
    assert stream.writable()
    assert not stream.readable()
    assert not stream.isatty()
    assert stream.encoding == "utf-8"
    assert stream.name == "<stdout>"
    assert "stdout" in repr(stream)
    with pytest.raises(io.UnsupportedOperation):
        stream.fileno()
    with pytest.raises(TypeError, match="must be str"):
        stream.write(b"bytes")  # pyright: ignore[reportArgumentType]
    assert stream.write("") == 0
    assert stream.write("é1") == 2
    stream.writelines(["a\n", "b\n"])
    stream.close()
    assert recorder.text == "é1a\nb\n"
    assert stream.closed
    with pytest.raises(ValueError, match="closed"):
        stream.write("x")


@pytest.fixture
def pipe_fd() -> Iterator[tuple[int, int]]:
    """A pipe `(read_end, fd)` whose write end is duplicated into a fresh descriptor to capture."""
    r, w = os.pipe()
    fd = os.dup(w)
    os.close(w)
    yield r, fd
    os.close(fd)
    os.close(r)


@pytest.fixture
def capture(stream: OutStream, pipe_fd: tuple[int, int]) -> Iterator[FDCapture]:
    cap = FDCapture(pipe_fd[1], stream)
    cap.start()
    yield cap
    cap.stop()


@posix_only
def test_fd_writes_reach_the_stream_after_drain(
    capture: FDCapture, stream: OutStream, recorder: Recorder
) -> None:
    assert capture.running
    assert stream.fileno() == capture.original_fd
    os.write(capture.fd, b"from fd\n")
    assert capture.drain(timeout=10)
    stream.flush()
    assert recorder.text == "from fd\n"


@posix_only
def test_subprocess_output_reaches_the_stream(
    capture: FDCapture, stream: OutStream, recorder: Recorder
) -> None:
    code = f"import os; os.write({capture.fd}, b'from child\\n' * 10000)"
    subprocess.run([sys.executable, "-c", code], pass_fds=(capture.fd,), check=True, timeout=60)
    assert capture.drain(timeout=10)
    stream.flush()
    assert recorder.text == "from child\n" * 10000


@posix_only
def test_split_and_invalid_utf8(capture: FDCapture, stream: OutStream, recorder: Recorder) -> None:
    data = "é€".encode()
    os.write(capture.fd, data[:1])
    assert capture.drain(timeout=10)
    os.write(capture.fd, data[1:] + b"\xff!")
    assert capture.drain(timeout=10)
    stream.flush()
    assert recorder.text == "é€\ufffd!"


@posix_only
def test_drain_of_an_empty_pipe_returns_at_once(capture: FDCapture) -> None:
    start = time.perf_counter()
    for _ in range(100):
        assert capture.drain(timeout=5)
    assert time.perf_counter() - start < 2.5  # waiting even once would take 5 s


@posix_only
def test_echo_and_stop_restore_the_fd(
    stream: OutStream, recorder: Recorder, pipe_fd: tuple[int, int]
) -> None:
    r, fd = pipe_fd
    cap = FDCapture(fd, stream, echo=True)
    cap.start()
    os.write(fd, b"echoed")
    assert cap.drain(timeout=10)
    assert os.read(r, 100) == b"echoed"
    cap.stop()
    assert not cap.running
    assert cap.original_fd is None
    with pytest.raises(io.UnsupportedOperation):
        stream.fileno()
    os.write(fd, b"after stop")  # goes to the pipe again, not into the stream
    assert os.read(r, 100) == b"after stop"
    stream.flush()
    assert recorder.text == "echoed"


@posix_only
def test_stop_while_a_child_holds_the_pipe(
    stream: OutStream, recorder: Recorder, pipe_fd: tuple[int, int]
) -> None:
    fd = pipe_fd[1]
    cap = FDCapture(fd, stream)
    cap.start()
    code = f"import os, sys; os.write({fd}, b'ready'); print(flush=True); sys.stdin.read()"
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        pass_fds=(fd,),
    ) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        try:
            assert child.stdout.readline() == b"\n"  # the child has written to fd
            assert cap.drain(timeout=10)
            cap.stop(timeout=0.05)  # the child still holds the write end: stop anyway
            assert not cap.running
        finally:
            child.stdin.close()
            child.wait(30)
    stream.flush()
    assert recorder.text == "ready"
