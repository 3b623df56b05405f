"""How the demo runs its stages: each as its own process (as a user would run it), logged, with a progress bar;
independent ones in parallel lanes that split the CPU's threads; quick ones in this process."""

from __future__ import annotations

import contextlib
import csv
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[2]  # the repository: where the stages run


def run(command: list[str], log: Path, budget_s: Optional[float] = None, run_dir: Optional[Path] = None,
        threads: Optional[int] = None) -> float:
    """Run one stage as its own process (as a user would), its output appended to `log`, with a progress bar
    (showing a training stage's latest step and loss); fail loudly. `threads` caps the process's CPU threads
    (OMP_NUM_THREADS). Returns the stage's wall time in seconds."""
    from tqdm.auto import tqdm

    start = time.monotonic()
    env = None if threads is None else thread_env(threads)
    print(f"[demo] {' '.join(command[1:])}", flush=True)
    with open(log, "a") as f, tqdm(total=round(budget_s) if budget_s else None, unit="s", leave=False,
                                   desc=run_dir.name if run_dir else command[2], disable=run_dir is None) as bar:
        f.write(f"\n$ {' '.join(command)}\n")
        f.flush()
        process = subprocess.Popen(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
        while process.poll() is None:
            time.sleep(1.0)
            bar.update(min(round(time.monotonic() - start), bar.total or 10**9) - bar.n)
            if run_dir is not None:
                bar.set_postfix_str(training_progress(run_dir), refresh=False)
    if process.returncode != 0:
        raise SystemExit(f"[demo] stage failed (exit {process.returncode}); see {log}")
    seconds = time.monotonic() - start
    print(f"[demo]   done in {seconds:.0f} s", flush=True)
    return seconds


def run_lanes(lanes: list[list[list[str]]], log: Path) -> float:
    """Run independent stages in parallel lanes (each lane's commands one after another), the CPU's threads split
    evenly between the lanes; each lane's output is appended to `log` when all are done, a failure is raised after.
    On 2 cores two 1-thread processes decode 1.1-1.4x as many clips per second as one 2-thread process
    (BENCHMARKS.md, "Sampling speed"). Returns the wall time in seconds."""
    start = time.monotonic()
    threads = max(1, cpu_count() // len(lanes))
    lane_logs = [log.with_name(f"{log.stem}.lane{i}{log.suffix}") for i in range(len(lanes))]
    failures: list[str] = []

    def work(commands: list[list[str]], lane_log: Path) -> None:
        try:
            for command in commands:
                run(command, lane_log, threads=threads)
        except SystemExit:
            failures.append(" ".join(command[1:3]))

    workers = [threading.Thread(target=work, args=args) for args in zip(lanes, lane_logs)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    with open(log, "a") as f:
        for lane_log in lane_logs:
            f.write(lane_log.read_text() if lane_log.is_file() else "")
            lane_log.unlink(missing_ok=True)
    if failures:
        raise SystemExit(f"[demo] stage failed ({', '.join(failures)}); see {log}")
    return time.monotonic() - start


def eval_lanes() -> int:
    """Parallel lanes for the generation and reconstruction stages: 2 on a CPU with 2 or more cores, else 1."""
    import torch

    return 1 if torch.cuda.is_available() or cpu_count() < 2 else 2


def thread_env(threads: int) -> dict[str, str]:
    """This process's environment with the CPU threads of a child process's math libraries capped at `threads`."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def cpu_count() -> int:
    """The CPU cores this process may use (its affinity mask where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_here(command: list[str], entry: Callable[[], Any], log: Path) -> Any:
    """A quick stage (an export, a path lookup) called in this process, where a new one would spend longer importing
    torch than working; logged as the command a user runs. Returns what `entry` returns."""
    start = time.monotonic()
    print(f"[demo] {' '.join(command)}", flush=True)
    with open(log, "a") as f, contextlib.redirect_stdout(f):
        f.write(f"\n$ python {' '.join(command)}\n")
        result = entry()
    print(f"[demo]   done in {time.monotonic() - start:.0f} s", flush=True)
    return result


def training_progress(run_dir: Path) -> str:
    """'step N, loss x' from the newest row of a running stage's CSV metrics ('' before the first flush)."""
    files = list(run_dir.glob("csv/version_*/metrics.csv"))
    if not files:
        return ""
    with open(files[0], newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss_step")]
    return f"step {rows[-1]['step']}, loss {float(rows[-1]['train/loss_step']):.3f}" if rows else ""
