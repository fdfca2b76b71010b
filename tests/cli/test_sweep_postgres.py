"""dropkit sweep on a real PostgreSQL server that the tests start on loopback.

The fixture runs initdb into a temporary directory, starts the server on a free local port and
stops it afterwards (Debian's postgresql package; .ci/run installs it and sets
DROPKIT_REQUIRE_POSTGRES=1, where a missing server is a failure instead of a skip).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
REQUIRED = os.environ.get("DROPKIT_REQUIRE_POSTGRES") == "1"
BINDIRS = (
    sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if Path("/usr/lib/postgresql").exists()
    else []
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url():
    try:
        import psycopg  # noqa: F401  (SQLAlchemy's default PostgreSQL driver)
    except ImportError:
        if REQUIRED:
            raise
        pytest.skip("psycopg is not installed")
    if not BINDIRS:
        if REQUIRED:
            pytest.fail("Debian's postgresql package is not installed")
        pytest.skip("needs Debian's postgresql package (.ci/run installs it)")
    bindir = BINDIRS[-1]
    root = Path(tempfile.mkdtemp(prefix="dropkit-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()

    def run(*cmd: object) -> None:
        subprocess.run([*as_postgres, *map(str, cmd)], check=True, capture_output=True, timeout=120)

    run(bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    run(bindir / "pg_ctl", "-D", data, "-l", root / "server.log", "-w", "-o", options, "start")
    try:
        run(bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "dropkit")
        yield f"postgresql://postgres@127.0.0.1:{port}/dropkit"
    finally:
        run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _worker(url: str, study: str, out: Path, trials: int, epochs: int) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "dropkit",
        "sweep",
        "-d",
        "synthetic",
        "--epochs",
        str(epochs),
        "--n-trials",
        str(trials),
        "--storage",
        url,
        "--study",
        study,
        "-o",
        str(out),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _states(url: str, study: str) -> list[tuple[int, str]]:
    loaded = optuna.load_study(study_name=study, storage=url)
    return [(t.number, t.state.name) for t in loaded.get_trials(deepcopy=False)]


def test_two_workers_on_one_postgres_study(postgres_url, tmp_path) -> None:
    procs = [_worker(postgres_url, "shared", tmp_path / f"w{i}", 4, 2) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    states = _states(postgres_url, "shared")
    numbers = [n for n, _ in states]
    assert len(numbers) == len(set(numbers))  # none duplicated
    assert sum(s in ("COMPLETE", "PRUNED") for _, s in states) == 4  # none lost, none extra


def test_a_killed_worker_leaves_a_study_another_worker_completes(postgres_url, tmp_path) -> None:
    slow = _worker(postgres_url, "killed", tmp_path / "slow", 2, 400)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if any(s == "RUNNING" for _, s in _states(postgres_url, "killed")):
                break
        except KeyError:  # the study is not created yet
            pass
        time.sleep(0.5)
    else:
        slow.kill()
        pytest.fail("the first worker never started a trial")
    slow.send_signal(signal.SIGKILL)
    slow.wait(timeout=30)
    time.sleep(25)  # past the heartbeat grace period (20 s): the trial is now stale
    fast = _worker(postgres_url, "killed", tmp_path / "fast", 2, 2)
    _, err = fast.communicate(timeout=300)
    assert fast.returncode == 0, err[-2000:]
    states = dict(_states(postgres_url, "killed"))
    assert states[0] == "FAIL"  # the killed worker's trial, marked by the heartbeat check
    assert sum(s in ("COMPLETE", "PRUNED") for s in states.values()) == 2
