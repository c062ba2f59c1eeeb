"""engine.core.ThreadCore over an engine it builds itself: built and stepped on one thread."""

from __future__ import annotations

import queue
import threading

import pytest
from engine_helpers import make_engine

from engine.core import StepBatch, ThreadCore
from engine.sequence import SamplingParams


def test_an_engine_it_makes_is_stepped_on_the_thread_that_built_it(tiny_model):
    built_on: list[int] = []

    def make():
        built_on.append(threading.get_ident())
        return make_engine(tiny_model)

    core = ThreadCore(make=make)
    stepped_on: set[int] = set()
    step = core.engine.step

    def recording_step():
        stepped_on.add(threading.get_ident())
        return step()

    core.engine.step = recording_step
    batches: queue.Queue[StepBatch] = queue.Queue()
    core.start(batches.put)
    core.send(("add", "r1", [1, 2, 3, 4], SamplingParams(temperature=0, max_tokens=3,
                                                          ignore_eos=True)))
    tokens = []
    while len(tokens) < 3:
        for out in batches.get(timeout=30).outputs:
            assert out.error is None
            tokens.append(out.token_id)
    core.stop()
    assert not core.alive
    assert stepped_on == set(built_on) and threading.get_ident() not in stepped_on


def test_a_failed_make_raises_on_the_caller_and_leaves_no_thread():
    def make():
        raise ValueError("no such model")

    before = threading.active_count()
    with pytest.raises(ValueError, match="no such model"):
        ThreadCore(make=make)
    assert threading.active_count() == before


def test_stopped_before_it_started_the_thread_ends(tiny_model):
    core = ThreadCore(make=lambda: make_engine(tiny_model))
    assert core.alive  # built, waiting for start()
    core.stop(timeout=5)
    assert not core.alive
