"""The dg commands of README.md (Dagster's project CLI, ``[tool.dg]`` in pyproject.toml), each
run once as the README shows it, from the project root, on the embedded default: no server, no
network, a temporary DAGSTER_HOME and AUX_ASSETS_HOME. The commands are read from the README,
so the README and what is tested cannot drift apart."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from aux_assets.definitions import defs
from tests.fixtures.servers_required import free_port
from tests.helpers.dagster_servers import ASSET_KEYS, REPO, VENV_BIN

README = REPO / "README.md"
DG = VENV_BIN / "dg"
DAY = "2026-01-05"
LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"


def _code_spans(text: str) -> Iterator[str]:
    """The lines of the README's fenced code blocks and its inline code spans (whitespace,
    line breaks included, collapsed to single spaces)."""
    fenced = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.M | re.S)  # in lists too
    for block in fenced.findall(text):
        yield from (line.strip() for line in block.splitlines())
    for span in re.findall(r"`([^`]+)`", fenced.sub("", text)):
        yield " ".join(span.split())


def readme_dg_commands() -> dict[str, list[str]]:
    """The dg commands shown in README.md, by subcommand (``"dev"``, ``"list defs"``, ...),
    as argv (comments dropped, ``dg`` as written)."""
    commands: dict[str, list[str]] = {}
    for line in _code_spans(README.read_text()):
        if not line.startswith(("dg ", ".venv/bin/dg ")):
            continue
        argv = shlex.split(line, comments=True)
        words = [a for a in argv[1:3] if not a.startswith("-")]
        name = " ".join(words[:1] if words[:1] in (["dev"], ["launch"]) else words)
        commands.setdefault(name, argv)
    return commands


COMMANDS = readme_dg_commands()


@pytest.fixture
def homes(tmp_path: Path, shared_living: Path) -> tuple[Path, dict[str, str]]:
    """AUX_ASSETS_HOME (the shared sample linked in), and the environment of a dg command:
    no AUX_*/DAGSTER_* variable of the caller (the embedded default), a DAGSTER_HOME with
    telemetry off, and a wide terminal so that ``dg list defs`` never wraps a name."""
    home, dagster_home = tmp_path / "home", tmp_path / "dagster"
    home.mkdir()
    dagster_home.mkdir()
    (home / "auxip-sample").symlink_to(shared_living, target_is_directory=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUX_", "DAGSTER_"))}
    env |= {"AUX_ASSETS_HOME": str(home), "DAGSTER_HOME": str(dagster_home), "COLUMNS": "300"}
    return home, env


def _argv(name: str) -> list[str]:
    """The README's ``dg <name>`` with the project venv's dg."""
    return [str(DG), *COMMANDS[name][1:]]


def _run(name: str, env: dict[str, str], timeout: float = 300) -> str:
    """Run the README's ``dg <name>`` from the project root; its output (it must succeed)."""
    done = subprocess.run(
        _argv(name),
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-5000:]
    return out


def test_readme_shows_the_dg_commands_run_here():
    assert set(COMMANDS) == {"check defs", "list defs", "launch", "dev"}
    assert COMMANDS["check defs"][1:] == ["check", "defs"]
    assert COMMANDS["list defs"][1:] == ["list", "defs"]
    assert COMMANDS["dev"][1:] == ["dev"]
    launch = ["launch", "--assets", ",".join(ASSET_KEYS), "--partition", DAY]
    assert COMMANDS["launch"][1:] == launch
    # the day of the README's `dagster asset materialize` example
    materialize = [s for s in _code_spans(README.read_text()) if "asset materialize" in s]
    assert materialize and all(f"--partition {DAY}" in s for s in materialize)


def test_dg_check_defs(homes):
    home, env = homes
    out = _run("check defs", env)
    assert "All definitions loaded successfully." in out
    assert "Traceback" not in out and "mismatch" not in out  # venv warning suppressed
    assert list(home.iterdir()) == [home / "auxip-sample"]  # loading writes nothing


def test_dg_list_defs_lists_the_code_location(homes):
    _, env = homes
    out = _run("list defs", env)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == set(ASSET_KEYS)
    names = {
        *ASSET_KEYS,
        *(f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys),
        "aux_job",
        *(s.name for s in defs.schedules or ()),
        *(s.name for s in defs.sensors or ()),
        "default_automation_condition_sensor",
    }
    # the names README.md gives
    for name in (
        "aux_search_results:mandatory_candidates",
        "aux_staged_items:all_staged_verified",
        "aux_catalog_items:catalog_coverage_complete",
        "aux_daily_schedule",
        "aux_new_products_sensor",
    ):
        assert name in names
    listed = set(re.findall(r"[\w:]+", out))
    assert names <= listed, sorted(names - listed)


def test_dg_launch_materializes_the_day(homes):
    home, env = homes
    out = _run("launch", env, timeout=600)
    assert "RUN_SUCCESS" in out, out[-5000:]
    catalog = json.loads((home / "io" / "aux_catalog_items" / f"{DAY}.json").read_text())
    assert catalog["partition"] == DAY
    assert catalog["coverage"] and all(catalog["coverage"].values()), catalog["coverage"]
    assert "AUX_POEORB" in catalog["coverage"]
    staged = json.loads((home / "io" / "aux_staged_items" / f"{DAY}.json").read_text())
    outcomes = [i["status"] for p in staged["products"] for i in p["items"]]
    assert outcomes and set(outcomes) == {"staged"}
    # the run is in the instance of DAGSTER_HOME, one partition of the three assets
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    try:
        runs = instance.get_runs()
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
        assert runs[0].tags["dagster/partition"] == DAY
        assert {k.to_user_string() for k in runs[0].asset_selection or ()} == set(ASSET_KEYS)
    finally:
        instance.dispose()


def _default_sigint() -> None:
    # dagster dev gives SIGTERM the handler of SIGINT: a SIGINT inherited as ignored (pytest
    # started as a background job) would make it ignore SIGTERM too.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _get(url: str, body: bytes | None = None) -> bytes:
    headers = {"Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=10) as r:
        data: bytes = r.read()
    return data


def test_dg_dev_serves_the_ui_and_stops_cleanly(homes, tmp_path):
    _, env = homes
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "dg-dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*_argv("dev"), "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_default_sigint,
        )
    try:
        deadline, last = time.monotonic() + 180, "not started"
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                info = json.loads(_get(f"{url}/server_info"))
                query = json.dumps({"query": LOCATIONS}).encode()
                entries = json.loads(_get(f"{url}/graphql", query))["data"]["workspaceOrError"]
                last = json.dumps(entries)
                if {"name": "aux_assets", "loadStatus": "LOADED"} in entries["locationEntries"]:
                    break
            except (OSError, urllib.error.URLError, ValueError) as exc:
                last = str(exc)
            time.sleep(0.5)
        else:
            pytest.fail(f"dg dev did not serve {url}: {last}\n{log.read_text()[-5000:]}")
        assert info["dagster_version"] == dg.__version__
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-5000:]
        # the code server and the daemon go too: on the signal, or at the latest when their
        # heartbeat to dg stops (45 s); a loaded CI machine saw them outlive 30 s
        deadline = time.monotonic() + 90
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = subprocess.run(
            ["ps", "-o", "pid,etimes,args", "-g", str(proc.pid)], capture_output=True, text=True
        ).stdout
        assert not _group_alive(proc.pid), left[:2000]
        assert "Dagster services shut down." in log.read_text()
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
