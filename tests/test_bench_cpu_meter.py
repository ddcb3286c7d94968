"""bench/common.py's CpuMeter: a window of a run cut out of its samples (bench/rules.py reports who
had the machine in the burst's first seconds this way)."""

from __future__ import annotations

import os
import time

from bench.common import CpuMeter


def _sample(at: float, web: float, workers: float, postgres: float, machine: float, idle: float) -> dict:
    return {
        "wall_s": at - 1000.0,  # monotonic: another origin than time.time(), the same pace
        "at": at,
        "web_worker_cpu_s:11": web,
        "workers_cpu_s:12": workers,
        "postgres_cpu_s:13": postgres,
        "bench_process_cpu_s": 0.0,
        "machine_s": machine,
        "idle_s": idle,
    }


def test_a_window_is_measured_between_the_samples_that_enclose_it():
    meter = CpuMeter(os.getpid())
    meter.samples = [
        _sample(100.0, web=1.0, workers=1.0, postgres=1.0, machine=200.0, idle=100.0),
        _sample(101.0, web=1.5, workers=2.0, postgres=1.5, machine=202.0, idle=100.0),  # busy
        _sample(102.0, web=2.0, workers=3.0, postgres=2.0, machine=204.0, idle=100.0),  # busy
        _sample(103.0, web=2.0, workers=3.0, postgres=2.0, machine=206.0, idle=102.0),  # idle
    ]

    busy = meter.window(100.2, 101.9)  # widened to the samples at 100 and 102

    assert (busy["from_s"], busy["to_s"]) == (-0.2, 1.8)
    assert busy["wall_s"] == 2.0 and busy["machine_busy_pct"] == 100.0
    assert busy["cores_used"] == {"postgres": 0.5, "web_worker": 0.5, "workers": 1.0}
    assert busy["workers_cpu_s"] == 2.0

    idle = meter.window(102.0, 103.0)
    assert idle["machine_busy_pct"] == 0.0 and idle["cores_used"] == {}


def test_a_window_past_the_samples_takes_the_first_and_the_last():
    meter = CpuMeter(os.getpid())
    meter.samples = [
        _sample(100.0, web=0.0, workers=0.0, postgres=0.0, machine=0.0, idle=0.0),
        _sample(104.0, web=1.0, workers=2.0, postgres=0.0, machine=8.0, idle=4.0),
    ]

    whole = meter.window(90.0, 200.0)

    assert (whole["from_s"], whole["to_s"]) == (10.0, 14.0)
    assert whole["machine_busy_pct"] == 50.0
    assert whole["cores_used"] == {"web_worker": 0.25, "workers": 0.5}


def test_sampling_runs_until_the_result():
    meter = CpuMeter(os.getpid()).sample_every(0.01)
    deadline = time.monotonic() + 10
    while len(meter.samples) < 3 and time.monotonic() < deadline:  # the thread's own samples
        time.sleep(0.01)
    assert len(meter.samples) >= 3

    meter.result()

    assert not meter._sampling.is_alive()
    times = [sample["at"] for sample in meter.samples]
    assert times == sorted(times)  # window() picks its enclosing samples by time
    count = len(meter.samples)
    meter._stop_sampling.wait(0.05)
    assert len(meter.samples) == count  # no sample after the result
