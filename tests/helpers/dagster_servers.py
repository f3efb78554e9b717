"""The real Dagster webserver + daemon as plain processes, driven through GraphQL only (the UI
test and the benchmark's backfill row)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fixtures.servers_required import free_port

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
BINARIES = (VENV_BIN / "dagster-webserver", VENV_BIN / "dagster-daemon")
LOCATION = "aux_assets.definitions"
ASSET_KEYS = ("aux_search_results", "aux_staged_items", "aux_catalog_items")

DAEMONS = """
{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }
"""
LOCATIONS = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""
LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message stack }
  ... on InvalidSubsetError { message } ... on UnauthorizedError { message } } }
"""
BACKFILL = """
query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { status numPartitions timestamp endTimestamp error { message }
    runs(limit: 1000) { runId status tags { key value } } } } }
"""
# The instance of the tests: no telemetry, 4 runs at once, one slot per pool by default.
DAGSTER_YAML = """\
telemetry:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: 4
  pools:
    default_limit: 1
"""
TERMINAL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


class ServersNotReady(RuntimeError):
    """The webserver or the daemon did not come up; the message has their logs' tails."""


@dataclass
class DagsterServers:
    """The running webserver (GraphQL at ``url``), its DAGSTER_HOME and its logs."""

    port: int
    dagster_home: Path
    logs: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def gql(self, query: str, timeout: float = 60, **variables: Any) -> dict[str, Any]:
        """POST one GraphQL query; its ``data`` (GraphQL errors raise ``AssertionError``)."""
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            doc = json.loads(response.read())
        assert not doc.get("errors"), doc["errors"]
        data: dict[str, Any] = doc["data"]
        return data

    def backfill(self, days: list[str], timeout_s: float = 600) -> tuple[dict[str, Any], float]:
        """Backfill the three assets over ``days``; the backfill when it ended, and its seconds
        from launch to the end (polled every 0.5 s)."""
        params = {
            "partitionNames": days,
            "assetSelection": [{"path": [key]} for key in ASSET_KEYS],
            "fromFailure": False,
        }
        began = time.monotonic()
        launched = self.gql(LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill: dict[str, Any] = {}
        while time.monotonic() - began < timeout_s:
            backfill = self.gql(BACKFILL, id=launched["backfillId"])["partitionBackfillOrError"]
            if backfill["status"] in TERMINAL:
                break
            time.sleep(0.5)
        return backfill, time.monotonic() - began


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the process group, then kill it after 20 s."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _ready(servers: DagsterServers, daemons: bool) -> str:
    """ "" when the location is loaded (and, with ``daemons``, the daemons are healthy)."""
    entries = servers.gql(LOCATIONS, timeout=10)["workspaceOrError"]["locationEntries"]
    loaded = [e for e in entries if e["name"] == LOCATION and e["loadStatus"] == "LOADED"]
    if not loaded:
        return json.dumps(entries)
    error = loaded[0]["locationOrLoadError"]
    assert error["__typename"] == "RepositoryLocation", error
    if not daemons:
        return ""
    health = servers.gql(DAEMONS, timeout=10)["instance"]["daemonHealth"]["allDaemonStatuses"]
    unhealthy = [d["daemonType"] for d in health if d["required"] and not d["healthy"]]
    return f"daemons not healthy yet: {unhealthy}" if unhealthy else ""


def _wait_ready(
    servers: DagsterServers, procs: list[subprocess.Popen[bytes]], daemons: bool
) -> None:
    deadline = time.monotonic() + 180
    last = "not started"
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        try:
            last = _ready(servers, daemons)
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
        if not last:
            return
        time.sleep(1)
    logs = sorted(servers.logs.glob("*.log"))
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs)
    raise ServersNotReady(f"the Dagster webserver/daemon did not get ready: {last}\n{tails}")


@contextlib.contextmanager
def dagster_servers(
    root: Path, env: Mapping[str, str], dagster_yaml: str
) -> Iterator[DagsterServers]:
    """dagster-webserver + dagster-daemon of the code location, with ``DAGSTER_HOME`` under
    ``root`` (its ``dagster.yaml`` is ``dagster_yaml``) and ``env``; stopped on exit."""
    dagster_home, work, logs = (root / n for n in ("dagster", "work", "logs"))
    for folder in (dagster_home, work, logs):
        folder.mkdir(exist_ok=True)
    (dagster_home / "dagster.yaml").write_text(dagster_yaml)
    env = {
        **env,
        "DAGSTER_HOME": str(dagster_home),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    }
    port = free_port()
    commands = {
        "webserver": [str(BINARIES[0]), "-h", "127.0.0.1", "-p", str(port), "-m", LOCATION],
        "daemon": [str(BINARIES[1]), "run", "-m", LOCATION],
    }
    procs: list[subprocess.Popen[bytes]] = []
    servers = DagsterServers(port, dagster_home, logs)
    try:
        # One after the other: both would create the SQLite schema of DAGSTER_HOME at once.
        for name, command in commands.items():
            with (logs / f"{name}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        command,
                        cwd=work,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            _wait_ready(servers, procs, daemons=name == "daemon")
        yield servers
    finally:
        for proc in procs:
            _stop(proc)
