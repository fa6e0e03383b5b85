"""The chaos test of bench/chaos.py, with smaller numbers: concurrent replies while clients drop, resume and
cancel, a worker process is SIGKILLed and Redis restarts. Nothing may be lost, duplicated or left running."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e


def test_replies_survive_dropped_clients_cancels_a_killed_worker_and_a_redis_restart(tmp_path):
    out = tmp_path / "chaos.json"
    run = subprocess.run(
        [sys.executable, "bench/chaos.py", "--replies", "24", "--workers", "4", "--tokens", "30", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(out.read_text())
    print(json.dumps(figures, indent=2))
    assert figures["replies_started"] == 24
    assert figures["completed"] + figures["cancelled"] + figures["failed"] == 24
    assert figures["cancelled"] >= 1 and figures["worker_process_killed"]
    assert figures["events_lost"] == 0
    assert figures["events_duplicated"] == 0
    assert figures["texts_differing_from_saved"] == 0
    assert figures["replies_not_terminal"] == 0
    assert figures["streams_without_exactly_one_terminal_event"] == 0
    assert figures["client_errors"] == 0, figures.get("client_error_samples")
    assert run.returncode == 0
