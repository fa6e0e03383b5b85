"""Run the chaos test (bench/chaos.py) many times in a row with a CPU-bound process beside it: `make chaos-soak`
(`CHAOS_RUNS=N`, default 20), or `python bench/chaos_soak.py --runs N`.

A lifecycle race that shows once in a few runs on a busy machine shows here. Each run gets its own seed (1, 2,
...), so clients drop, resume and cancel at other points each time; a python busy loop keeps one core busy for
the whole soak (it is stopped at the end, by its pid). Prints each run's figures as one line and a final line;
exits non-zero if any run had a non-zero figure (events lost or duplicated, texts differing from the saved ones,
streams without exactly one terminal event, replies not ended, client errors) or did not finish. A run that
breaks a rule leaves its report in `var/chaos-failures/` (see bench/chaos.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = (
    "events_lost",
    "events_duplicated",
    "texts_differing_from_saved",
    "streams_without_exactly_one_terminal_event",
    "replies_not_terminal",
    "client_errors",
)
SHORT = {
    "events_lost": "lost",
    "events_duplicated": "dup",
    "texts_differing_from_saved": "text",
    "streams_without_exactly_one_terminal_event": "terminal",
    "replies_not_terminal": "open",
    "client_errors": "errors",
}
BUSY_LOOP = "while True: pass"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=int(os.environ.get("CHAOS_RUNS", "20")))
    parser.add_argument("--no-busy-loop", action="store_true", help="run without the CPU-bound process beside")
    parser.add_argument("chaos_args", nargs="*", help="passed on to bench/chaos.py (after --)")
    args = parser.parse_args()
    out = ROOT / "var" / "chaos-soak"
    out.mkdir(parents=True, exist_ok=True)
    busy = None if args.no_busy_loop else subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    failed_runs: list[int] = []
    started = time.monotonic()
    try:
        for run in range(1, args.runs + 1):
            result = out / f"run-{run}.json"
            result.unlink(missing_ok=True)
            began = time.monotonic()
            chaos = subprocess.run(
                [sys.executable, "bench/chaos.py", "--seed", str(run), "--json", str(result), *args.chaos_args],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            (out / f"run-{run}.log").write_text(chaos.stdout + chaos.stderr)
            seconds = time.monotonic() - began
            if not result.exists():
                failed_runs.append(run)
                print(f"run {run}: did not finish (exit {chaos.returncode}, {seconds:.0f} s): see {out}/run-{run}.log")
                continue
            figures = json.loads(result.read_text())
            bad = {k: figures.get(k, 0) for k in FIGURES if figures.get(k, 0)}
            if bad or chaos.returncode:
                failed_runs.append(run)
            counts = " ".join(f"{SHORT[k]}={figures.get(k, 0)}" for k in FIGURES)
            print(
                f"run {run}: {counts} | completed={figures['completed']} cancelled={figures['cancelled']} "
                f"failed={figures['failed']} {figures.get('failed_by_error', {})} "
                f"redis_down={figures['redis_restart_seconds']}s "
                f"({seconds:.0f} s){'  report: ' + figures['failure_report'] if 'failure_report' in figures else ''}",
                flush=True,
            )
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    total = time.monotonic() - started
    if failed_runs:
        print(f"chaos soak: {len(failed_runs)} of {args.runs} runs broke a rule (runs {failed_runs}) in {total:.0f} s")
        return 1
    print(f"chaos soak: {args.runs} of {args.runs} runs with every figure at zero in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
