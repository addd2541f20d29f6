"""The deadline arithmetic (clipsearch.deadline) and the OpenSearch client's time limits,
on a fake clock: what may start, how long a call may take, and that no back-off
sleeps past the deadline. The ingest Lambda under a real slow endpoint is in
tests/test_lambda_ingest.py (test_a_slow_endpoint_...)."""

from __future__ import annotations

import math

import pytest
from opensearchpy.exceptions import ConnectionTimeout, TransportError

import clipsearch.deadline
from clipsearch.aws.clients import bound_by_time, retry_throttled
from clipsearch.deadline import MIN_CALL_S, RESPONSE_RESERVE_S, Deadline


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Context:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def get_remaining_time_in_millis(self) -> int:
        return self.ms


def test_the_deadline_is_read_once_from_the_context_and_kept_on_the_clock():
    clock = FakeClock()
    context = Context(20_000)
    deadline = Deadline.from_context(context, default_s=120.0, clock=clock).with_margin(4.0)
    context.ms = 999_999  # read at entry only: later readings do not move it
    assert deadline.left() == 20.0
    assert deadline.request_time() == 20.0 - RESPONSE_RESERVE_S
    assert deadline.work_time() == 20.0 - RESPONSE_RESERVE_S - 4.0
    clock.now += 12.5
    assert deadline.left() == pytest.approx(7.5)
    assert deadline.work_time() == pytest.approx(2.5)
    clock.now += 10.0
    assert deadline.left() == pytest.approx(-2.5)
    assert deadline.timeout(60.0) == 0.0  # never negative


def test_a_context_without_remaining_time_gets_the_default():
    clock = FakeClock()
    assert Deadline.from_context(object(), default_s=120.0, clock=clock).left() == 120.0


def test_work_starts_only_while_the_time_left_beyond_the_margin_covers_one_call():
    clock = FakeClock()
    deadline = Deadline.after(10.0, clock=clock).with_margin(5.0)
    # 10 - 1 (reserve) - 5 (margin) = 4 s for a call with a follow-up.
    assert deadline.allows(3.0) and deadline.allows(4.0) and not deadline.allows(4.01)
    assert deadline.timeout(60.0) == 4.0 and deadline.timeout(2.0) == 2.0
    clock.now += 3.5
    assert not deadline.allows(MIN_CALL_S)  # 0.5 s is no call
    # A final call (nothing follows it) may still use the margin.
    assert deadline.request_time() == pytest.approx(5.5)


def test_the_module_clock_can_be_replaced(monkeypatch):
    clock = FakeClock(50.0)
    monkeypatch.setattr(clipsearch.deadline, "clock", clock)
    deadline = Deadline.from_context(Context(30_000), default_s=1.0)
    clock.now += 10
    assert deadline.left() == 20.0


def test_an_unbounded_deadline_allows_everything():
    deadline = Deadline.unbounded().with_margin(15.0)
    assert deadline.allows(1e9) and deadline.timeout(60.0) == 60.0
    assert math.isinf(deadline.request_time())


class FakeTransport:
    """Stands in for opensearch-py's Transport: answers from a script, records timeouts."""

    max_retries = 3

    def __init__(self, clock: FakeClock, answers: list[object], takes: float = 0.2) -> None:
        self.clock = clock
        self.answers = answers
        self.takes = takes
        self.timeouts: list[float] = []

    def perform_request(self, method, url, *args, **kwargs):
        self.timeouts.append(kwargs["timeout"])
        self.clock.now += self.takes
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeClient:
    def __init__(self, transport: FakeTransport) -> None:
        self.transport = transport


def limited_client(clock: FakeClock, deadline: Deadline, answers: list[object]):
    """Wrapped as build_index wraps the ingest Lambda's client."""
    client = FakeClient(FakeTransport(clock, answers))
    bound_by_time(client, deadline.request_time, default_timeout=10.0)
    retry_throttled(client, sleep=clock.sleep, jitter=lambda: 1.0,
                    time_left=deadline.request_time)
    return client


def test_each_request_timeout_is_cut_to_the_time_left_over_its_attempts():
    clock = FakeClock()
    deadline = Deadline.after(9.0, clock=clock)  # 8 s for requests
    client = limited_client(clock, deadline, [{"ok": 1}, {"ok": 2}])
    assert client.transport.perform_request("GET", "/x") == {"ok": 1}
    # 8 s over 4 attempts (max_retries 3 + 1), below the configured 10 s.
    assert client.transport.timeouts == [pytest.approx(2.0)]
    clock.now += 7.5  # 1.3 s left, 0.3 s of it for requests
    with pytest.raises(ConnectionTimeout):  # under 0.5 s: not sent at all
        client.transport.perform_request("GET", "/y")
    assert len(client.transport.timeouts) == 1


def test_a_throttled_request_is_retried_but_no_back_off_sleeps_past_the_deadline():
    clock = FakeClock()
    deadline = Deadline.after(2.5, clock=clock)  # 1.5 s for requests, each takes 0.2 s
    throttled = TransportError(429, "es_rejected_execution_exception", {})
    client = limited_client(clock, deadline, [throttled, throttled, throttled, {"ok": 1}])
    with pytest.raises(TransportError) as info:
        client.transport.perform_request("POST", "/_bulk")
    assert info.value.status_code == 429
    # Waits 0.1 then 0.2 s; after the third 429, 0.6 s are left: waiting 0.4 s would
    # leave under 0.5 s for the retry, so the 429 is raised instead.
    assert clock.sleeps == [0.1, 0.2]
    assert clock.now < deadline.end - RESPONSE_RESERVE_S


def test_with_time_to_spare_throttling_is_waited_out():
    clock = FakeClock()
    deadline = Deadline.after(60.0, clock=clock)
    throttled = TransportError(429, "es_rejected_execution_exception", {})
    client = limited_client(clock, deadline, [throttled, throttled, {"ok": 1}])
    assert client.transport.perform_request("POST", "/_bulk") == {"ok": 1}
    assert clock.sleeps == [0.1, 0.2]
