"""docker/locustfile.py run by the real Locust, headless, in a subprocess (importing locust
gevent-patches the process), against loopback ports where no server listens: every user must
stay alive and keep loading its variant, each failure counted under its variant's names.

A user whose start-up metadata read hit a connection error died with it (Locust's response
re-raises the connection error from `.ok`): its greenlet ended, so that variant lost the user
for the whole run, silently in the stats (0 requests), while the other variant kept its users:
before and after no longer ran under the same load."""
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCUST = shutil.which("locust") or str(Path(sys.executable).with_name("locust"))

pytestmark = pytest.mark.skipif(not Path(LOCUST).exists(), reason="locust not installed (pip install 'dwserve[load]')")


def run_locust(tmp_path: Path, users: int, seconds: int = 3) -> tuple[subprocess.CompletedProcess, dict[str, dict]]:
    env = {**os.environ, "DWSERVE_BEFORE_URL": "http://127.0.0.1:9", "DWSERVE_AFTER_URL": "http://127.0.0.1:7"}
    r = subprocess.run([LOCUST, "-f", str(ROOT / "docker" / "locustfile.py"), "--headless", "-u", str(users),
                        "-r", str(users), "--run-time", f"{seconds}s", "--stop-timeout", "1",
                        "--csv", str(tmp_path / "lc"), "--only-summary"],
                       capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    with open(tmp_path / "lc_stats.csv") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    return r, rows


def test_users_survive_a_server_that_is_not_answering(tmp_path):
    r, rows = run_locust(tmp_path, users=2)
    log = r.stdout + r.stderr
    assert "failed with" not in log, log[-3000:]          # no user greenlet died
    for variant in ("before", "after"):
        sent = sum(int(row["Request Count"]) for name, row in rows.items() if name.endswith(f"[{variant}]"))
        assert sent >= 3, f"{variant}: {sent} requests in 3 s; rows {sorted(rows)}\n{log[-2000:]}"
        assert int(rows[f"lfm2 metadata [{variant}]"]["Failure Count"]) >= 1   # counted, not hidden


def test_an_odd_user_count_is_refused_not_split_unevenly(tmp_path):
    """--users 3 split 2 after / 1 before, --users 1 loaded after alone (equal class weights)."""
    env = {**os.environ, "DWSERVE_BEFORE_URL": "http://127.0.0.1:9", "DWSERVE_AFTER_URL": "http://127.0.0.1:7"}
    r = subprocess.run([LOCUST, "-f", str(ROOT / "docker" / "locustfile.py"), "--headless", "-u", "3", "-r", "3",
                        "--run-time", "2s", "--only-summary"], capture_output=True, text=True, timeout=60, env=env,
                       cwd=tmp_path)
    assert r.returncode != 0 and "LOADTEST_USERS=4" in r.stdout + r.stderr, r.stdout + r.stderr
