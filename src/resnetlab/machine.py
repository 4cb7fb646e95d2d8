"""This machine: what it is, as the record of a figure says it; the most multiply-accumulates per
second it can run in each precision; and timing that is fair to several paths under background load."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch

from .errors import one_line

__all__ = ["PEAK_PRECISIONS", "Peak", "Ratio", "Timing", "compare", "cpu_flags", "cpu_name", "describe_machine",
           "interleaved", "matmul_macs_per_s", "measure_peaks", "unit_peaks", "verdict"]

PEAK_PRECISIONS = ("fp32", "bf16", "int8")


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set:
    """The CPU's feature flags (from /proc/cpuinfo; empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def describe_machine(device: Optional[torch.device] = None) -> str:
    """One line: CPU, cores, torch threads and version, OS, and the GPU when ``device`` is one
    (``None``: whenever CUDA is available)."""
    text = (f"{cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, {platform.system()}")
    gpu = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if gpu:
        text += f"; GPU {torch.cuda.get_device_name(device)}"
    return text


# ---------------------------------------------------------------- the peak

# Each thread runs CHAINS independent chains of one 512-bit instruction (enough to hide its latency),
# so the count is limited by the units' throughput alone: an upper bound no convolution or matmul
# kernel passes. fp32: vfmadd (16 MACs), bf16: vdpbf16ps (32 MACs), int8: vpdpbusd (64 MACs) per
# instruction. Prints {"fp32": MACs/s, "bf16": ..., "int8": ...}, the best of three runs each.
PEAK_SOURCE = r"""
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define CHAINS 16

#define KERNEL(NAME, TYPE, ZERO, STEP, MACS_PER_STEP, REDUCE)                                   \
    static double NAME(long rounds, float seed) {                                               \
        double check = 0.0, start = omp_get_wtime();                                            \
        _Pragma("omp parallel reduction(+ : check)") {                                          \
            TYPE acc[CHAINS];                                                                   \
            for (int c = 0; c < CHAINS; c++) acc[c] = ZERO;                                     \
            __m512 fa = _mm512_set1_ps(seed), fb = _mm512_set1_ps(1.0f - seed);                 \
            __m512i ia = _mm512_set1_epi8((char)(seed * 3)), ib = _mm512_set1_epi8(1);          \
            (void)fa; (void)fb; (void)ia; (void)ib;                                             \
            for (long r = 0; r < rounds; r++) {                                                 \
                _Pragma("GCC unroll 16") for (int c = 0; c < CHAINS; c++) acc[c] = STEP;        \
            }                                                                                   \
            for (int c = 0; c < CHAINS; c++) check += REDUCE(acc[c]);                           \
        }                                                                                       \
        double seconds = omp_get_wtime() - start;                                               \
        if (check == 1234.5) fprintf(stderr, "-\n"); /* the results are used */                 \
        return (double)rounds * CHAINS * MACS_PER_STEP * omp_get_max_threads() / seconds;        \
    }

#define REDUCE_PS(v) _mm512_reduce_add_ps(v)
#define REDUCE_EPI32(v) (double)_mm512_reduce_add_epi32(v)

KERNEL(fp32_fma, __m512, _mm512_setzero_ps(), _mm512_fmadd_ps(acc[c], fa, fb), 16, REDUCE_PS)
#ifdef WITH_BF16
KERNEL(bf16_dot, __m512, _mm512_setzero_ps(),
       _mm512_dpbf16_ps(acc[c], _mm512_cvtne2ps_pbh(fa, fb), _mm512_cvtne2ps_pbh(fb, fa)), 32, REDUCE_PS)
#endif
#ifdef WITH_INT8
KERNEL(int8_dot, __m512i, _mm512_setzero_si512(), _mm512_dpbusd_epi32(acc[c], ia, ib), 64, REDUCE_EPI32)
#endif

static double best_of_three(double (*kernel)(long, float), long rounds) {
    double best = 0.0;
    for (int i = 0; i < 3; i++) {
        double rate = kernel(rounds, 0.5f);
        if (rate > best) best = rate;
    }
    return best;
}

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 20000000L;
    printf("{\"fp32\": %.6g", best_of_three(fp32_fma, rounds));
#ifdef WITH_BF16
    printf(", \"bf16\": %.6g", best_of_three(bf16_dot, rounds));
#endif
#ifdef WITH_INT8
    printf(", \"int8\": %.6g", best_of_three(int8_dot, rounds));
#endif
    printf("}\n");
    return 0;
}
"""


def unit_peaks(threads: Optional[int] = None) -> Dict[str, float]:
    """MACs per second of the CPU's AVX-512 units on ``threads`` threads (default: torch's), for each
    precision the CPU has; {} without gcc or AVX-512, or where the kernel does not build."""
    flags = cpu_flags()
    if not shutil.which("gcc") or "avx512f" not in flags:
        return {}
    options = ["-mavx512f"]
    if "avx512_bf16" in flags:
        options += ["-mavx512bf16", "-DWITH_BF16"]
    if "avx512_vnni" in flags:
        options += ["-mavx512vnni", "-mavx512bw", "-DWITH_INT8"]
    threads = threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory() as folder:
        source, binary = Path(folder) / "peak_fma.c", Path(folder) / "peak_fma"
        source.write_text(PEAK_SOURCE)
        try:
            subprocess.run(["gcc", "-O3", "-fopenmp", *options, str(source), "-o", str(binary)], check=True,
                           capture_output=True)
            run = subprocess.run([str(binary)], check=True, capture_output=True, text=True,
                                 env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
        except (OSError, subprocess.CalledProcessError):  # an old gcc, or no OpenMP
            return {}
    return json.loads(run.stdout)


def matmul_macs_per_s(precision: str, n: int = 2048, seconds: float = 1.0) -> Optional[float]:
    """MACs per second of an n x n by n x n matmul through torch in ``precision`` (its fastest call;
    int8: torch._int_mm), or None where this build has no such kernel."""
    if precision == "int8":
        a = torch.randint(-128, 128, (n, n), dtype=torch.int8)
        b = torch.randint(-128, 128, (n, n), dtype=torch.int8)
        multiply = torch._int_mm
    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        multiply = torch.mm
    with torch.inference_mode():
        timing = interleaved({"matmul": lambda: multiply(a, b)}, rounds=3, seconds=seconds / 3)["matmul"]
    if timing.error:  # no such kernel in this build
        return None
    return n**3 / min(timing.latencies)


@dataclass(frozen=True)
class Peak:
    """The most multiply-accumulates per second measured in one precision, and how."""

    macs_per_s: float  # the higher of the two below
    source: str  # which: "vector units" or "matmul"
    units: Optional[float] = None  # the AVX-512 kernel's rate (unit_peaks), where it runs
    matmul: Optional[float] = None  # the fastest n x n matmul through torch (matmul_macs_per_s)


def measure_peaks(threads: Optional[int] = None, matmul_n: int = 2048, matmul_seconds: float = 1.0
                  ) -> Dict[str, Peak]:
    """This machine's peak multiply-accumulates per second in each precision, on ``threads`` threads
    (default: torch's): the higher of what its AVX-512 units run (``unit_peaks``) and what an
    ``matmul_n`` square matmul through torch reaches. The matmul is higher where the CPU has
    units the kernel does not use (AMX tiles for bf16 and int8) or where the kernel cannot run
    (no gcc, no AVX-512). A precision that neither measures is left out. The inference bench
    and benchmarks/roofline.py both take their peaks from here."""
    threads = threads or torch.get_num_threads()
    units = unit_peaks(threads)
    peaks = {}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for precision in PEAK_PRECISIONS:
            unit, matmul = units.get(precision), matmul_macs_per_s(precision, matmul_n, matmul_seconds)
            if unit or matmul:
                best, source = max((unit or 0.0, "vector units"), (matmul or 0.0, "matmul"))
                peaks[precision] = Peak(best, source, unit, matmul)
    finally:
        torch.set_num_threads(previous)
    return peaks


# ---------------------------------------------------------------- timing in rounds


def _quartiles(values: List[float]) -> List[float]:
    return statistics.quantiles(values, n=4, method="inclusive")


@dataclass
class Timing:
    """What ``interleaved`` measured for one path: the seconds of each call, round by round."""

    name: str
    items: int = 1  # items each call processes (a batch's images), for rates in items/s
    rounds: List[List[float]] = field(default_factory=list)
    error: str = ""  # why the path stopped, when it raised

    @property
    def rates(self) -> List[float]:
        """Items per second in each round."""
        return [self.items * len(calls) / sum(calls) for calls in self.rounds]

    @property
    def rate(self) -> float:
        """The median of the rounds' items per second."""
        return statistics.median(self.rates)

    @property
    def spread(self) -> float:
        """The interquartile range of the rounds' items per second (the middle half of the rounds)."""
        low, _, high = _quartiles(self.rates)
        return high - low

    @property
    def latencies(self) -> List[float]:
        """The seconds of every call, all rounds together."""
        return [seconds for calls in self.rounds for seconds in calls]

    def latency(self, percent: float) -> float:
        """The ``percent`` percentile of the calls' seconds (50: the median)."""
        if not 0 < percent < 100:
            raise ValueError(f"percent must be between 0 and 100, got {percent}")
        return statistics.quantiles(self.latencies, n=1000, method="inclusive")[round(10 * percent) - 1]

    def to_dict(self) -> Dict[str, Any]:
        return dict(name=self.name, items=self.items, rounds=self.rounds, error=self.error)


def interleaved(paths: Mapping[str, Callable[[], Any]], rounds: int = 10, seconds: float = 1.0, *, items: int = 1,
                warmup: int = 1, clock: Callable[[], float] = time.perf_counter) -> Dict[str, Timing]:
    """Time each of ``paths`` (name -> a function of no arguments: one call) in ``rounds`` rounds.

    Each round runs every path in turn, each for about ``seconds`` of calls (at least one), so
    background load falls on all paths alike instead of on whichever ran during it. The order
    rotates by one path each round (A B C, B C A, C A B, ...): no path always runs right after the
    same other. Each path is first called ``warmup`` times, untimed. A path that raises stops there;
    its Timing keeps the error and the rounds it completed. ``clock``: seconds, as time.perf_counter.
    """
    if rounds < 2:
        raise ValueError(f"rounds must be at least 2 (a spread needs two rounds), got {rounds}")
    if seconds <= 0 or items < 1 or warmup < 0:
        raise ValueError(f"seconds and items must be positive and warmup >= 0, got {seconds}, {items}, {warmup}")
    if not paths:
        raise ValueError("no paths to time")
    timings = {name: Timing(name, items) for name in paths}

    def fail(name: str, error: Exception) -> None:
        timings[name].error = f"{type(error).__name__}: {one_line(error)[:200]}"

    for name, call in paths.items():
        try:
            for _ in range(warmup):
                call()
        except Exception as error:  # the caller sees it in the Timing; the other paths go on
            fail(name, error)
    names = list(paths)
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            if timings[name].error:
                continue
            calls: List[float] = []
            start = tick = clock()
            try:
                while not calls or tick - start < seconds:
                    paths[name]()
                    tock = clock()
                    calls.append(tock - tick)
                    tick = tock
            except Exception as error:
                fail(name, error)
                continue
            timings[name].rounds.append(calls)
    return timings


@dataclass(frozen=True)
class Ratio:
    """A path's rate over a reference's, taken round by round (both timed in the same rounds)."""

    median: float  # of the rounds' ratios
    spread: float  # their interquartile range

    @property
    def within_noise(self) -> bool:
        """Whether the rounds disagree by more than the difference the ratio claims."""
        return abs(self.median - 1) <= self.spread

    @property
    def verdict(self) -> str:
        """The verdict: "1.52x faster", "1.31x slower" or "within noise"."""
        if self.within_noise:
            return "within noise"
        if self.median > 1:
            return f"{self.median:.2f}x faster"
        return f"{1 / self.median:.2f}x slower"


def compare(path: Timing, reference: Timing) -> Ratio:
    """``path``'s rate over ``reference``'s, round by round: both saw the same load in each round."""
    ratios = [mine / theirs for mine, theirs in zip(path.rates, reference.rates)]
    if len(ratios) < 2:
        raise ValueError(f"{path.name} and {reference.name} share {len(ratios)} rounds; a ratio needs two")
    low, _, high = _quartiles(ratios)
    return Ratio(statistics.median(ratios), high - low)


def verdict(path: Timing, reference: Timing) -> str:
    """How ``path`` compares with ``reference``: "1.52x faster", "1.31x slower" or "within noise"."""
    return compare(path, reference).verdict
