"""What the SPLADE head and encoding benchmarks (`head`, `encode`, `decoder`) share: the environment recorded in
every row, peak memory and timing of a call, and a fresh process per measurement on CPU.

Peak memory:
- CUDA: torch.cuda.max_memory_allocated() during the call minus what was allocated before it.
- CPU: every (backend, mode) runs in a fresh subprocess (`python -m lsr.eval.bench.worker CONFIG`);
  the peak RSS (VmHWM, the process's own high-water mark, reset to the current RSS through
  /proc/self/clear_refs just before the call) after its first full-size call minus the RSS with the inputs in
  place and the libraries warmed up by a tiny call. Not ru_maxrss: a spawned child's starts at its parent's
  peak RSS. tracemalloc does not see torch's allocations, and a shared process would keep the worst backend's
  peak.

torch is imported when a benchmark runs, so the command line starts without it.
"""
from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time
from typing import Any

HEAD_BACKENDS = ("reference", "torch", "triton")  # lsr.kernels.BACKENDS, named here without importing torch
DTYPES = ("float32", "bfloat16")


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def environment(device: str) -> dict[str, Any]:
    """What every row records about where it ran: the device and its name, torch, triton and CUDA versions."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    try:
        triton_version = version("triton")
    except PackageNotFoundError:
        triton_version = None
    return {"device": device, "device_name": device_name(device), "torch": torch.__version__,
            "triton": triton_version, "cuda": torch.version.cuda, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def measure_in_process(measure, config: dict[str, Any]) -> dict[str, Any]:
    """`measure(config)` here; a failure (out of memory, a kernel that does not compile) becomes an error row,
    as a worker's would."""
    try:
        return measure(config)
    except Exception as e:  # noqa: BLE001 - reported in the row
        if str(config.get("device", "")).startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        return {**config, "error": f"{type(e).__name__}: {e}".splitlines()[0]}


def available_backends(device: str) -> list[str]:
    """Backends worth timing here: triton only compiled on CUDA (the CPU interpreter is for tests)."""
    names = ["reference", "torch"]
    if device.startswith("cuda"):
        try:
            import triton  # noqa: F401

            names.append("triton")
        except ImportError:
            pass
    return names


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _peak_rss_mb() -> float:
    """This process's RSS high-water mark (VmHWM). ru_maxrss would not do: exec keeps the maximum with the
    parent's peak, so a worker's starts at its parent's (the benchmark driver's) RSS."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak_rss() -> None:
    """Lower the RSS high-water mark to the current RSS (Linux >= 4.0), so set-up peaks are not counted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # not allowed here: the mark then also covers the set-up before the call
        pass


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def _status_mb(*keys: str) -> dict[str, float]:
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return {k: int(fields[k].split()[0]) / 1024 for k in keys}  # kB


class MemorySampler:
    """Peak memory of a block of work in this process, sampled every `interval` s by a thread:
    `peak_rss_mb` (VmRSS, file pages of memory-mapped files included: the kernel can reclaim those) and
    `peak_anon_mb` (RssAnon, the process's own memory, which it cannot)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.peak_rss_mb, self.peak_anon_mb = interval, 0.0, 0.0

    def _sample(self) -> None:
        now = _status_mb("VmRSS", "RssAnon")
        self.peak_rss_mb = max(self.peak_rss_mb, now["VmRSS"])
        self.peak_anon_mb = max(self.peak_anon_mb, now["RssAnon"])

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> MemorySampler:
        import threading

        self._stop = threading.Event()
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def peak_and_times(device: str, call, repeats: int, warmup=None) -> tuple[float, list[float]]:
    """Peak memory (MB) of `call`'s first run over what was in use just before it (CUDA: allocated tensors;
    CPU: RSS high-water mark, so the process must be fresh, see measure_in_subprocess), then the seconds of
    `repeats` more runs. `warmup` (a tiny call setting libraries up) runs before the memory baseline."""
    if warmup is not None:
        warmup()
    _sync(device)
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call()
        _sync(device)
        peak_mb = (torch.cuda.max_memory_allocated() - before) / 2 ** 20
    else:
        _reset_peak_rss()
        before = _current_rss_mb()
        call()
        peak_mb = _peak_rss_mb() - before
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        call()
        _sync(device)
        times.append(time.perf_counter() - start)
    return peak_mb, times


def measure_in_subprocess(config: dict[str, Any]) -> dict[str, Any]:
    """One measurement (config["bench"]: head or decoder) in a fresh process; a failure becomes an error row."""
    done = subprocess.run([sys.executable, "-m", "lsr.eval.bench.worker", json.dumps(config)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return {**config, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def add_ratios(rows: list[dict[str, Any]], *keys: str) -> None:
    """reference / backend for each key, on rows of the same shape and mode."""
    for row in rows:
        ref = next((r for r in rows if r["backend"] == "reference" and r.get("mode") == row.get("mode")
                    and r.get("vocab") == row.get("vocab") and "error" not in r), None)
        if ref is None or "error" in row:
            continue
        for key in keys:
            if row.get(key) and ref.get(key) is not None:
                row[f"reference_over_this_{key}"] = ref[key] / max(row[key], 1e-9)


def finish(rows: list[dict[str, Any]], time_key: str, json_path) -> list[dict[str, Any]]:
    """The rows with the reference's time and memory over each backend's, appended to the results file."""
    from .results import append_rows

    add_ratios(rows, time_key, "peak_mb")
    append_rows(json_path, rows)
    return rows


def format_ratios(r: dict[str, Any], time_key: str) -> str:
    """The reference's time and peak memory over this row's (see add_ratios), as the rows print them."""
    return (f"(reference/this: time {r.get(f'reference_over_this_{time_key}', float('nan')):.2f}x, "
            f"memory {r.get('reference_over_this_peak_mb', float('nan')):.1f}x)")
