"""Asset checks of the aux assets, one result per day (partitioned checks): computed from the
documents the assets produce, each day with its own description.

A range run records one evaluation per day it covers (:func:`per_day`), so a day that lacks a
product type fails alone and says which type, which unit and what is missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import NamedTuple

import dagster as dg

# The check history API of the instance (public methods) takes and gives these internal types.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from aux_assets import tracing
from aux_assets.defs.partitions import daily_partitions
from aux_assets.documents import (
    CatalogDocument,
    Gap,
    SearchDocument,
    StagedDocument,
    coverage_gaps,
    failed_items,
    mandatory_gaps,
    unreachable_optional,
)
from aux_assets.timeliness import Verdict, judge

MANDATORY_CANDIDATES = dg.AssetCheckSpec(
    "mandatory_candidates",
    asset="aux_search_results",
    partitions_def=daily_partitions,
    description="Every mandatory product type has a selection (for each listed platform) "
    "in the day's window. Not blocking: what was found is still staged.",
)
ALL_STAGED_VERIFIED = dg.AssetCheckSpec(
    "all_staged_verified",
    asset="aux_staged_items",
    partitions_def=daily_partitions,
    blocking=True,
    description="Every selected item of the day is stored with verified size and checksum "
    "and registered.",
)
CATALOG_COVERAGE = dg.AssetCheckSpec(
    "catalog_coverage_complete",
    asset="aux_catalog_items",
    partitions_def=daily_partitions,
    blocking=True,
    description="The catalog holds a selection for every mandatory product type of the day.",
)
ON_TIME = dg.AssetCheckSpec(
    "catalog_on_time",
    asset="aux_catalog_items",
    partitions_def=daily_partitions,
    description="The day is complete in the catalog by its deadline (AUX_DUE_AFTER_HOURS after "
    "the day's end, default 30 h); judged at each run and by aux_deadline_sensor.",
)


class Outcome(NamedTuple):
    """One day's result of a check."""

    passed: bool
    description: str
    metadata: Mapping[str, object]
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR


_EVALUATED = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}


def per_day(
    context: dg.AssetExecutionContext,
    spec: dg.AssetCheckSpec,
    outcomes: Mapping[str, Outcome],
) -> Iterator[dg.AssetCheckEvaluation | dg.Output[None]]:
    """One evaluation of ``spec`` per day (a blocking one that fails with severity ERROR stops
    the step after all its days are recorded), then the check's output."""
    for day, (passed, description, metadata, severity) in sorted(outcomes.items()):
        # With tracing on, a step's events are yielded at its end (aux_asset's span), so the
        # day's new materialization is not stored yet: better no target than the previous one.
        target = _target(context.instance, spec, day) if tracing.tracer() is None else None
        yield evaluation(spec, day, passed, description, metadata, severity, target)
    yield check_output(context, spec)


def _target(
    instance: dg.DagsterInstance, spec: dg.AssetCheckSpec, day: str
) -> AssetCheckEvaluationTargetMaterializationData | None:
    """The day's materialization the check judged (the UI links it, and tells a result that
    predates a newer materialization)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=spec.asset_key, asset_partitions=[day]), limit=1
    ).records
    if not records:
        return None
    record = records[0]
    return AssetCheckEvaluationTargetMaterializationData(
        storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
    )


def restated(
    context: dg.AssetExecutionContext, specs: Iterable[dg.AssetCheckSpec], days: Iterable[str]
) -> Iterator[dg.AssetCheckEvaluation]:
    """For a run that evaluates nothing (a dry run): the last result of each check of ``specs``
    this run planned for a day, again, marked ``restated``. Dagster plans the checks of every
    day of the run when it is launched and would otherwise show them skipped (a late day would
    no longer look late)."""
    storage = context.instance.event_log_storage
    keys = [spec.key for spec in specs]
    infos = storage.get_asset_check_partition_info(keys, partition_keys=list(days))
    for info in infos:
        if info.latest_planned_run_id != context.run.run_id or info.partition_key is None:
            continue
        history = storage.get_asset_check_execution_history(
            info.check_key,
            limit=1,
            status=_EVALUATED,
            partition_filter=PartitionKeyFilter(key=info.partition_key),
        )
        event = history[0].event if history else None
        last = event.dagster_event.event_specific_data if event and event.dagster_event else None
        if isinstance(last, dg.AssetCheckEvaluation):
            yield last.with_metadata({**last.metadata, "restated": True})


def check_output(context: dg.AssetExecutionContext, spec: dg.AssetCheckSpec) -> dg.Output[None]:
    """The output Dagster expects of an inline check, once its evaluations are yielded."""
    names = {s.key: name for name, s in context.assets_def.check_specs_by_output_name.items()}
    return dg.Output(None, output_name=names[spec.key])


def evaluation(
    spec: dg.AssetCheckSpec,
    day: str,
    passed: bool,
    description: str,
    metadata: Mapping[str, object],
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    target: AssetCheckEvaluationTargetMaterializationData | None = None,
) -> dg.AssetCheckEvaluation:
    """The evaluation of ``spec`` for ``day`` (of the materialization ``target``)."""
    return dg.AssetCheckEvaluation(
        target_materialization_data=target,
        asset_key=spec.asset_key,
        check_name=spec.name,
        passed=passed,
        metadata=dict(metadata),  # type: ignore[arg-type]
        severity=severity,
        description=description,
        blocking=spec.blocking,
        partition=day,
    )


def _outcome(
    day: str,
    problems: Mapping[str, str | None],
    ok: str,
    what: str,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> Outcome:
    """Passed without ``problems``; else a description naming each (the first 20)."""
    shown = [f"{k}: {v}" if v else k for k, v in problems.items()]
    description = f"{day}: {ok}" if not problems else f"{day}: {what}{'; '.join(shown[:20])}"
    metadata = {"problems": dg.MetadataValue.json(dict(problems)), "n_problems": len(problems)}
    return Outcome(not problems, description, metadata, severity)


def _gaps_outcome(
    day: str, gaps: Mapping[str, Gap], ok: str, what: str, notes: Mapping[str, str] | None = None
) -> Outcome:
    """:func:`_outcome` of gaps, and of ``notes`` (problems that only warn): an error when a gap
    is more than waiting for files not yet published (they are expected later: the day is not
    failing, it waits), else a warning."""
    serious = any(not gap.awaited for gap in gaps.values())
    if gaps and not serious:
        what = "waiting for publication: "
    elif not gaps:
        what = ""
    problems = {ptype: gap.text for ptype, gap in gaps.items()} | dict(notes or {})
    warns = bool(problems) and not serious
    severity = dg.AssetCheckSeverity.WARN if warns else dg.AssetCheckSeverity.ERROR
    return _outcome(day, problems, ok, what, severity)


def mandatory_candidates(documents: Mapping[str, SearchDocument]) -> dict[str, Outcome]:
    """Per day: the mandatory types left uncovered, and why; optional types whose source
    failed are named too (a warning)."""
    return {
        day: _gaps_outcome(
            day,
            mandatory_gaps(doc),
            "every mandatory product type has a selection",
            "gaps in mandatory product types: ",
            unreachable_optional(doc),
        )
        for day, doc in documents.items()
    }


def all_staged_verified(documents: Mapping[str, StagedDocument]) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    for day, doc in documents.items():
        n_items = sum(len(p["items"]) for p in doc["products"])
        failed = failed_items(doc)
        outcomes[day] = _outcome(
            day,
            failed,
            f"{n_items} item(s) stored, verified and registered",
            f"{len(failed)} of {n_items} item(s) failed: ",
        )
    return outcomes


def catalog_coverage(
    staged: Mapping[str, StagedDocument], documents: Mapping[str, CatalogDocument]
) -> dict[str, Outcome]:
    return {
        day: _gaps_outcome(
            day,
            coverage_gaps(staged[day], doc),
            f"the catalog covers every mandatory product type ({len(doc['coverage'])})",
            "gaps in the catalog: ",
        )
        for day, doc in documents.items()
    }


def verdict_metadata(verdict: Verdict) -> dict[str, object]:
    return {
        "state": verdict.state,
        "due": verdict.due.isoformat(),
        "hours_late": verdict.hours_late,
    }


def on_time(
    documents: Mapping[str, CatalogDocument], after: timedelta, now: datetime
) -> dict[str, Outcome]:
    """The deadline of each day of the run, judged now from its coverage."""
    outcomes: dict[str, Outcome] = {}
    for day, doc in documents.items():
        missing = [ptype for ptype, covered in doc["coverage"].items() if not covered]
        verdict = judge(day, after, now, missing, now)
        outcomes[day] = Outcome(
            verdict.passed,
            verdict.description,
            verdict_metadata(verdict),
            dg.AssetCheckSeverity.WARN,
        )
    return outcomes
