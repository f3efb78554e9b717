"""Run coroutines concurrently and report a failure as itself, not as a group."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def run_all(coroutines: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """The results of ``coroutines`` run concurrently, in their order. When one fails the others
    are cancelled; a single failure is raised as itself (its message and traceback are what the
    user needs, not ``ExceptionGroup: unhandled errors in a TaskGroup``), several as the group."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coroutines]
    except ExceptionGroup as failed:
        if len(failed.exceptions) == 1:
            raise failed.exceptions[0] from None
        raise
    return [task.result() for task in tasks]
