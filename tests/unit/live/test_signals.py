"""AbortOnSignal with a real RunEngine: a signal aborts the plan at once."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from xsvs_bluesky.live import AbortOnSignal, close_engine


@pytest.fixture
def RE():
    from bluesky import RunEngine

    engine = RunEngine({}, context_managers=[])
    yield engine
    close_engine(engine)


def slow_run(steps: int = 200, dt: float = 0.02):
    import bluesky.plan_stubs as bps
    import bluesky.preprocessors as bpp

    @bpp.run_decorator(md={"purpose": "signal test"})
    def inner():
        for _ in range(steps):
            yield from bps.sleep(dt)

    return inner()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_aborts_the_plan_with_its_reason(RE, sig, capsys):
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    reasons: list[str] = []
    before = signal.getsignal(sig)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), sig))
    with AbortOnSignal(RE, then=reasons.append) as stopper:
        timer.start()
        t0 = time.monotonic()
        assert stopper.run(slow_run()) is None  # 200 x 0.02 s: not finished
        seconds = time.monotonic() - t0
    timer.join()
    assert seconds < 2.5, seconds
    assert signal.getsignal(sig) is before  # restored
    expected = (
        "interrupted (SIGINT, Ctrl-C)"
        if sig == signal.SIGINT
        else "interrupted (signal SIGTERM)"
    )
    assert stopper.signum == sig and stopper.reason == expected
    assert reasons == [expected]  # then() once, after the abort
    (stop,) = [doc for name, doc in docs if name == "stop"]
    assert stop["exit_status"] == "abort" and stop["reason"] == expected
    assert capsys.readouterr().out == ""  # not the RunEngine's "Aborting: ..."


def test_a_signal_before_the_plan_keeps_it_from_starting(RE):
    docs: list[str] = []
    RE.subscribe(lambda name, doc: docs.append(name))
    with AbortOnSignal(RE) as stopper:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)  # the handler runs in this thread between bytecodes
        assert stopper.interrupted
        assert stopper.run(slow_run(5)) is None
    assert docs == []


def test_without_a_signal_the_plan_runs_whole(RE):
    with AbortOnSignal(RE) as stopper:
        uids = stopper.run(slow_run(5, 0.001))
    assert uids is not None and len(uids) == 1 and not stopper.interrupted
