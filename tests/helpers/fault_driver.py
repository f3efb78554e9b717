"""A staging process for the kill and concurrency trials:
``python -m tests.helpers.fault_driver SPEC``.

SPEC is a JSON file: ``catalog``, ``storage`` (folders), ``tasks`` (a JSON file of
:class:`~tests.helpers.fault_day.DayTask` fields), ``base`` (the file server), ``token`` (use the
server's OAuth2 endpoint), ``read_timeout_s``, ``connections``, ``attempts`` and optionally
``go`` (a file to wait for before staging, so that several processes start together) and
``die_before_links`` (SIGKILL itself when, after writing item files, the catalog is about to
write the ``collection.json`` that links them).
It prints ``ready`` once set up, then one JSON line: statuses, failures, start and end times.
Exit status 0 when every item is staged or present.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

from aux_assets.auth import Auth, OAuth2Auth, OAuth2Settings
from aux_assets.catalog import static as catalog
from aux_assets.catalog.static import LocalCatalog
from aux_assets.staging import stager as staging
from aux_assets.storage.local import LocalStorage
from aux_assets.utils.retry import RetryPolicy
from tests.helpers.fault_day import DayTask, served_tasks
from tests.helpers.fault_server import CLIENT_ID, CLIENT_SECRET


def _die_before_links() -> None:
    """SIGKILL this process at the point between an upsert's item files and its links."""
    write_json = getattr(catalog, "write_json")  # noqa: B009 (not re-exported)
    items_written = False

    def write(path: Path, doc: object) -> None:
        nonlocal items_written
        if path.name == "collection.json" and items_written:
            os.kill(os.getpid(), signal.SIGKILL)
        items_written = items_written or path.name not in {"collection.json", "catalog.json"}
        write_json(path, doc)

    setattr(catalog, "write_json", write)  # noqa: B010


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    day = [DayTask(**t) for t in json.loads(Path(spec["tasks"]).read_text())]
    auth: Auth | None = None
    if spec.get("token"):
        settings = OAuth2Settings(
            f"{spec['base']}/token", spec["base"], CLIENT_ID, client_secret=CLIENT_SECRET
        )
        auth = OAuth2Auth(settings)
    if spec.get("die_before_links"):
        _die_before_links()
    stager = staging.Stager(
        LocalCatalog(Path(spec["catalog"])),
        LocalStorage(Path(spec["storage"])),
        limits={"auxip": spec["connections"]},
        retry=RetryPolicy(attempts=spec["attempts"], backoff_s=0.05, max_backoff_s=0.2),
        read_timeout_s=spec["read_timeout_s"],
    )
    tasks = served_tasks(day, spec["base"], auth)
    print("ready", flush=True)
    go = Path(spec["go"]) if spec.get("go") else None
    while go is not None and not go.exists():
        time.sleep(0.005)
    started = time.time()
    outcomes = stager.stage(tasks)
    result = {
        "statuses": Counter(o.status for o in outcomes),
        "failed": [[o.item_id, o.reason] for o in outcomes if o.status == "failed"],
        "started": started,
        "ended": time.time(),
    }
    print(json.dumps(result), flush=True)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
