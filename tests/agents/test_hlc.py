from __future__ import annotations

import pytest
from assay.agents.hlc import HLC, HybridLogicalClock
from assay.errors import UserInputError


def test_hlc_is_monotonic_when_the_wall_clock_stalls_or_goes_back():
    t = [1000]
    clk = HybridLogicalClock("a", lambda: t[0])
    a = clk.now()
    b = clk.now()
    t[0] = 900  # the wall clock jumped back
    c = clk.now()
    assert a < b < c and c.ms == 1000 and c.counter == 2


def test_receive_orders_after_remote_even_when_local_clock_is_behind():
    fast = HybridLogicalClock("fast", lambda: 50_000)
    slow = HybridLogicalClock("slow", lambda: 1_000)  # minutes behind
    sent = fast.now()
    got = slow.update(sent)
    assert got > sent
    after = slow.now()
    assert after > got  # later local events stay after what was received


def test_string_form_sorts_like_the_timestamps_and_round_trips():
    stamps = [HLC(5, 2, "x"), HLC(5, 10, "a"), HLC(12, 0, "b"), HLC(5, 2, "y")]
    assert sorted(stamps) == sorted(stamps, key=str)
    assert HLC.parse(str(stamps[1])) == stamps[1]
    with pytest.raises(UserInputError):
        HLC.parse("yesterday")
