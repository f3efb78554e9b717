"""The two layers of aux_assets: only ``aux_assets/defs/`` and ``aux_assets/definitions.py`` may
import dagster; everything else (the domain core and its adapters) must import and run without
it. The code location itself must still name the whole contract."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import aux_assets

PACKAGE = Path(aux_assets.__file__).resolve().parent
REPO = PACKAGE.parent
DAGSTER_LAYER = (PACKAGE / "defs", PACKAGE / "definitions.py")


def _is_dagster(module: str) -> bool:
    top = module.split(".", 1)[0]
    return top == "dagster" or top.startswith("dagster_")


def _core_files() -> list[Path]:
    """Every .py file of aux_assets outside the Dagster layer, found on disk so that new
    modules are covered without listing them."""
    return sorted(
        path
        for path in PACKAGE.rglob("*.py")
        if not any(path == part or part in path.parents for part in DAGSTER_LAYER)
    )


def _core_modules() -> list[str]:
    """The importable names of :func:`_core_files`, ``__main__`` modules left out (they run
    a command on import)."""
    names = []
    for path in _core_files():
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


# Imports the modules one at a time and reports the first after whose import dagster is loaded.
IMPORT_ONE_BY_ONE = """
import importlib, json, sys

def dagster_loaded():
    return sorted(
        m for m in sys.modules
        if m.split(".", 1)[0] == "dagster" or m.split(".", 1)[0].startswith("dagster_")
    )

if dagster_loaded():
    sys.exit("dagster is loaded before any aux_assets module: " + ", ".join(dagster_loaded()))
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
    if dagster_loaded():
        sys.exit(f"importing {name} loads dagster ({', '.join(dagster_loaded()[:5])}, ...)")
print("imported", len(json.loads(sys.argv[1])), "modules without dagster")
"""


def test_core_modules_import_without_dagster(tmp_path):
    modules = _core_modules()
    some = {"aux_assets", "aux_assets.discovery", "aux_assets.report", "aux_assets.sample"}
    assert some <= set(modules)
    assert not [m for m in modules if m.startswith("aux_assets.defs") or m.endswith("__main__")]
    assert "aux_assets.definitions" not in modules
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ONE_BY_ONE, json.dumps(modules)],
        cwd=REPO,
        env={**os.environ, "AUX_ASSETS_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["imported", str(len(modules)), "modules", "without", "dagster"]


def test_no_core_file_imports_dagster():
    offending = []
    files = _core_files()
    assert PACKAGE / "discovery.py" in files and PACKAGE / "definitions.py" not in files
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offending += [
                f"{path.relative_to(REPO)}:{node.lineno}: imports {name}"
                for name in names
                if _is_dagster(name)
            ]
    assert offending == [], "only aux_assets/defs/ and definitions.py may import dagster:\n" + (
        "\n".join(offending)
    )


def test_the_code_location_names_the_whole_contract():
    import dagster as dg

    from aux_assets.definitions import defs

    assert isinstance(defs, dg.Definitions)
    repository = defs.get_repository_def()  # resolves everything, as a code server does
    graph = defs.resolve_asset_graph()
    assets = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"aux_search_results", "aux_staged_items", "aux_catalog_items"} <= assets, assets
    checks = {key.name for key in graph.asset_check_keys}
    expected_checks = {
        "mandatory_candidates",
        "all_staged_verified",
        "catalog_coverage_complete",
        "catalog_on_time",
    }
    assert expected_checks <= checks, checks
    assert "aux_job" in {job.name for job in repository.get_all_jobs()}
    assert "aux_daily_schedule" in {s.name for s in repository.schedule_defs}
    sensors = {s.name for s in repository.sensor_defs}
    assert {"aux_new_products_sensor", "aux_deadline_sensor"} <= sensors
    resources = set(repository.get_top_level_resources())
    expected_resources = {
        "auxip",
        "prip",
        "cadip",
        "cdse",
        "earthdatahub",
        "catalog_source",
        "lta",
        "catalog",
        "storage",
        "products",
        "aux_json_io",
    }
    assert expected_resources <= resources, expected_resources - resources
