"""Timing in interleaved rounds: the bookkeeping, on fake clocks (no real time is measured here)."""

from __future__ import annotations

import pytest

from resnetlab.machine import Ratio, Timing, compare, interleaved, verdict


class FakeClock:
    """A clock that moves only when a fake path says its call took so long."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def path(self, costs, log=None, name=""):
        """A path whose calls take ``costs`` seconds, one after the other."""
        costs = iter(costs)

        def call() -> None:
            if log is not None:
                log.append(name)
            self.now += next(costs)

        return call


def test_rounds_rotate_the_order_and_every_path_runs_in_each():
    clock, log = FakeClock(), []
    paths = {name: clock.path([1.0] * 4, log, name) for name in "ABC"}
    timings = interleaved(paths, rounds=4, seconds=1.0, warmup=0, clock=clock)
    assert "".join(log) == "ABC" "BCA" "CAB" "ABC"
    assert all(timing.rounds == [[1.0]] * 4 for timing in timings.values())


def test_a_round_runs_a_path_until_its_seconds_are_spent_and_warmup_is_untimed():
    clock = FakeClock()
    timing = interleaved({"A": clock.path([9.0, 1, 2, 3, 4, 5, 5])}, rounds=2, seconds=10, items=2, warmup=1,
                         clock=clock)["A"]
    assert timing.rounds == [[1, 2, 3, 4], [5, 5]]
    assert timing.rates == [2 * 4 / 10, 2 * 2 / 10]
    assert timing.latencies == [1, 2, 3, 4, 5, 5]
    assert timing.latency(50) == 3.5 and timing.latency(90) == 5


def test_median_and_interquartile_spread_of_the_rounds():
    timing = Timing("A", items=1, rounds=[[1 / rate] for rate in (5, 1, 4, 2, 3)])
    assert timing.rate == pytest.approx(3)
    assert timing.spread == pytest.approx(2)  # quartiles 2 and 4


def test_a_ratio_is_taken_round_by_round_so_load_on_both_cancels():
    clock = FakeClock()
    load = [1, 1, 4, 1, 3]  # background load slows both paths in rounds 3 and 5
    paths = {"reference": clock.path([0.2 * f for f in load]), "fast": clock.path([0.1 * f for f in load])}
    timings = interleaved(paths, rounds=5, seconds=0.01, warmup=0, clock=clock)
    assert timings["reference"].spread > 0  # the rates swing with the load ...
    ratio = compare(timings["fast"], timings["reference"])
    assert ratio.median == pytest.approx(2) and ratio.spread == pytest.approx(0)  # ... their ratio does not
    assert verdict(timings["fast"], timings["reference"]) == "2.00x faster"
    assert verdict(timings["reference"], timings["fast"]) == "2.00x slower"


def test_a_ratio_the_rounds_disagree_on_is_within_noise():
    clock = FakeClock()
    paths = {"reference": clock.path([1.0] * 4), "other": clock.path([0.8, 1.25, 0.9, 1.2])}
    timings = interleaved(paths, rounds=4, seconds=0.01, warmup=0, clock=clock)
    assert compare(timings["other"], timings["reference"]).within_noise
    assert verdict(timings["other"], timings["reference"]) == "within noise"
    assert verdict(timings["reference"], timings["reference"]) == "within noise"


@pytest.mark.parametrize("median, spread, expected", [
    (1.25, 0.25, "within noise"),  # the spread is as large as the difference claimed
    (1.25, 0.20, "1.25x faster"),
    (0.80, 0.10, "1.25x slower"),
    (0.80, 0.25, "within noise"),
])
def test_verdicts(median, spread, expected):
    assert Ratio(median, spread).verdict == expected


def test_a_path_that_raises_stops_and_the_others_go_on():
    clock = FakeClock()

    def broken() -> None:
        raise RuntimeError("no kernel\nfor this")

    costs = iter([1.0, 1.0, 1.0])

    def breaks_in_round_two() -> None:
        clock.now += next(costs)
        if clock.now > 2:
            raise MemoryError("out of memory")

    timings = interleaved({"ok": clock.path([1.0] * 3), "broken": broken, "late": breaks_in_round_two}, rounds=3,
                          seconds=1.0, warmup=0, clock=clock)
    assert timings["ok"].rounds == [[1.0]] * 3 and not timings["ok"].error
    assert timings["broken"].error == "RuntimeError: no kernel for this" and timings["broken"].rounds == []
    assert timings["late"].error.startswith("MemoryError") and timings["late"].rounds == [[1.0]]
    with pytest.raises(ValueError, match="share 1 rounds; a ratio needs two"):
        compare(timings["late"], timings["ok"])


@pytest.mark.parametrize("kwargs, message", [
    (dict(rounds=1), "rounds must be at least 2 \\(a spread needs two rounds\\), got 1"),
    (dict(seconds=0), "seconds and items must be positive"),
    (dict(items=0), "seconds and items must be positive"),
])
def test_bad_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        interleaved({"A": lambda: None}, **kwargs)
    with pytest.raises(ValueError, match="no paths to time"):
        interleaved({})
    with pytest.raises(ValueError, match="percent must be between 0 and 100"):
        Timing("A", rounds=[[1.0], [1.0]]).latency(100)
