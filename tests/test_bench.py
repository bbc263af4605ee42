"""The benchmark harness must not rot: ``python -m bench all --quick`` runs every scenario.

The quick run starts the real server, go, and nginx and wrk where the machine has
them (never installing anything; the fallbacks stand in otherwise), and must finish
with a JSON result naming every scenario.  A second run forces the fallbacks, so both
paths stay alive whatever the machine has.  The pure helpers are checked in-process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from bench._athens import athens_layout
from bench._fixtures import write_module_zip
from bench._herd import count_runs, write_counting_go
from bench._load import parse_wrk_output, wrk_script
from bench._replicas import split
from bench._report import format_value, render_markdown, render_table
from bench._results import Row, ScenarioResult
from bench._runner import SCENARIOS
from bench._server import nginx_conf

REPO = Path(__file__).resolve().parent.parent


#: A hang guard, not a bound on speed: a quick run of every scenario took 94 to over
#: 300 s on two loaded cores.
BENCH_TIMEOUT = 900


def run_bench(results: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    argv = [sys.executable, "-m", "bench", *args, "--quick", "--results-dir", str(results)]
    # A session of its own, so that a run past the guard is killed with every server,
    # nginx and wrk it started (its process group), not the bench process alone.
    with subprocess.Popen(
        argv,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=BENCH_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(
                f"the bench ran past {BENCH_TIMEOUT} s\nstdout:\n{stdout}\n"
                f"stderr:\n{stderr[-5000:]}"
            )
        except BaseException:  # the test run interrupted: not waited for
            os.killpg(process.pid, signal.SIGKILL)
            raise
    done = subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
    documents = sorted(results.glob("*.json"))
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-5000:]}"
    assert len(documents) == 1, list(results.iterdir())
    assert documents[0].with_suffix(".md").exists()
    return done, json.loads(documents[0].read_text())


@pytest.mark.slow
def test_quick_run_measures_every_scenario(tmp_path: Path) -> None:
    done, document = run_bench(tmp_path, "all")
    scenarios = document["scenarios"]
    assert list(scenarios) == list(SCENARIOS)
    assert scenarios["athens"]["status"] == "skipped: no --athens-binary"
    for name in ("cached", "cold", "herd", "memory", "graph", "replicas"):
        scenario = scenarios[name]
        assert scenario["status"] == "ok", scenario
        ratios = [row["ratio"] for row in scenario["rows"] if row["ratio_name"]]
        assert ratios, f"{name} reported no ratio"
        assert all(isinstance(r, float) and r > 0 for r in ratios), (name, ratios)
    # upstream: its ratios may be missing at toy sizes (nothing prefetched), not its runs.
    assert scenarios["upstream"]["status"] == "ok", scenarios["upstream"]
    # The herd's whole point: however many clients ask, go runs as for one client (one
    # run: from a VCS the .info/.mod miss fetches the whole version, the .zip finds it).
    runs = [row for row in scenarios["herd"]["rows"] if row["metric"] == "go runs"]
    assert runs
    assert all(row["values"]["herd"] == row["values"]["single"] for row in runs), runs
    # Two workers and the floor are measured beside athens-trio on the small files.
    cached_ratios = {row["ratio_name"] for row in scenarios["cached"]["rows"]}
    assert "athens-trio 2 workers / athens-trio" in cached_ratios, cached_ratios
    assert "athens-trio / hypercorn-trio floor" in cached_ratios, cached_ratios
    # Replicas sharing a bucket and Redis: one go run per version across them, whichever
    # replica each client asked.
    replicas = scenarios["replicas"]
    assert replicas["status"] == "ok", replicas
    runs = [row for row in replicas["rows"] if row["metric"] == "go runs"]
    assert len(runs) == 1
    assert all(row["values"] == {"1 replica": 1, "2 replicas": 1} for row in runs), runs
    assert [row["values"] for row in replicas["rows"] if row["metric"] == "errors"] == [
        {"1 replica": 0, "2 replicas": 0}
    ]
    assert document["machine"]["cpu_count"]
    assert document["tools"]["versions"]["go"]
    assert "== ratios" in done.stdout
    assert "== cached: ok" in done.stdout


@pytest.mark.slow
def test_quick_run_falls_back_without_nginx_and_wrk(tmp_path: Path) -> None:
    done, document = run_bench(
        tmp_path, "cached", "--without", "nginx", "--without", "wrk", "--without", "matplotlib"
    )
    cached = document["scenarios"]["cached"]
    assert cached["status"] == "ok", cached
    assert "STAND-IN: nginx missing" in cached["reference"]
    assert "STAND-IN: wrk missing" in cached["reference"]
    assert all("http.server" in row["values"] for row in cached["rows"])
    assert document["charts"] == {}
    assert not list(tmp_path.glob("*.png"))
    assert "no charts" in done.stdout


def test_wrk_script_and_its_summary() -> None:
    script = wrk_script(["/a/@v/v1.0.0.info", "/a/@v/v1.0.0.mod"], 500)
    assert "local limit = 500" in script
    assert '"/a/@v/v1.0.0.info", "/a/@v/v1.0.0.mod"' in script
    output = (
        "Running 1s test @ http://127.0.0.1:1\n"
        'BENCH_JSON {"requests": 490, "bytes": 98000, "duration_us": 250000, "connect": 0, '
        '"read": 1, "write": 0, "status": 2, "timeout": 0, "p50_us": 400, "p99_us": 1500, '
        '"wrk_duration_us": 1000000}\n'
    )
    result = parse_wrk_output(output)
    assert result.requests == 490
    assert result.errors == 3
    assert result.seconds == pytest.approx(0.25)
    assert result.requests_per_second == pytest.approx(1960)
    assert result.p99_ms == pytest.approx(1.5)
    with pytest.raises(RuntimeError, match="no summary"):
        parse_wrk_output("wrk: connection refused\n")


def test_nginx_conf_keeps_everything_in_its_directory(tmp_path: Path) -> None:
    conf = nginx_conf(tmp_path / "nginx", tmp_path / "storage", 4321, as_root=False)
    assert "daemon off;" in conf
    assert "listen 127.0.0.1:4321;" in conf
    assert f"root {(tmp_path / 'storage').resolve()};" in conf
    assert "sendfile on;" in conf
    assert "user " not in conf
    for line in conf.splitlines():
        if line.strip().startswith(("pid ", "error_log ", "client_body_temp_path ")):
            assert str(tmp_path.resolve()) in line, line
    assert nginx_conf(tmp_path, tmp_path, 1, as_root=True).startswith("user root;")


def test_module_zip_is_go_shaped(tmp_path: Path) -> None:
    module, version = "github.com/athens-bench/z", "v1.2.3"
    mod = b"module github.com/athens-bench/z\n"
    path = tmp_path / "z.zip"
    write_module_zip(path, module, version, 300_000, mod)
    assert 290_000 <= path.stat().st_size <= 310_000
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert all(name.startswith(f"{module}@{version}/") for name in names)
        assert archive.read(f"{module}@{version}/go.mod") == mod


def test_athens_layout_links_the_same_files(tmp_path: Path) -> None:
    versions = tmp_path / "goproxy" / "github.com" / "athens-bench" / "m" / "@v"
    versions.mkdir(parents=True)
    for suffix in ("info", "mod", "zip"):
        (versions / f"v1.0.0.{suffix}").write_text(suffix)
    (versions / "list").write_text("v1.0.0\n")
    athens = tmp_path / "athens"
    assert athens_layout(tmp_path / "goproxy", athens) == 1
    target = athens / "github.com" / "athens-bench" / "m" / "v1.0.0"
    assert (target / "v1.0.0.info").read_text() == "info"
    assert (target / "go.mod").read_text() == "mod"
    assert (target / "source.zip").samefile(versions / "v1.0.0.zip")


def test_counting_go_counts_fetching_runs_per_module(tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    wrapper = write_counting_go(tmp_path / "go", "/bin/true", log)
    for args in (
        ["version"],
        ["mod", "download", "-json", "example.com/a@v1.0.0"],
        ["list", "-m", "-json", "example.com/a@v1.0.0"],
        ["mod", "download", "-json", "example.com/ab@v1.0.0"],
    ):
        subprocess.run([str(wrapper), *args], check=True)
    assert count_runs(log, "example.com/a") == 2
    assert count_runs(log, "example.com/ab") == 1
    assert count_runs(log, "example.com/c") == 0


def test_clients_are_dealt_evenly_over_replicas() -> None:
    assert split(50, 2) == [25, 25]
    assert split(7, 2) == [4, 3]
    assert split(1, 2) == [1, 0]
    assert split(9, 3) == [3, 3, 3]


def test_table_shows_values_and_ratios() -> None:
    result = ScenarioResult("cached", reference="nginx", seconds=1.5)
    result.add(
        Row(
            case=".info+.mod, 8 clients",
            metric="req/s",
            values={"athens-trio": 450.0, "nginx": 15000.0},
            ratio_name="athens-trio / nginx",
            ratio=0.03,
        )
    )
    result.add(Row(case="10 clients", metric="go runs", values={"athens-trio": 1}))
    table = render_table(result)
    assert "== cached: ok (1.5 s)" in table
    assert "15,000" in table
    assert "0.030" in table
    assert "athens-trio / nginx (higher is better)" in table
    markdown = render_markdown(result)
    assert "| .info+.mod, 8 clients | req/s | 450 | 15,000 | 0.030 |" in markdown
    assert format_value(None) == "-"
    assert format_value(1) == "1"
