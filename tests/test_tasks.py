"""``utils.tasks.run_all``: concurrent results in order, a single failure raised as itself."""

import asyncio

import pytest

from aux_assets.utils.tasks import run_all


async def _value(value: int, delay_s: float) -> int:
    await asyncio.sleep(delay_s)
    return value


async def _fail(message: str) -> int:
    await asyncio.sleep(0)
    raise ValueError(message)


def test_results_keep_the_order_of_the_coroutines_not_of_completion():
    assert asyncio.run(run_all([_value(1, 0.03), _value(2, 0.0), _value(3, 0.01)])) == [1, 2, 3]


def test_one_failure_is_raised_as_itself_and_cancels_the_others():
    cancelled: list[bool] = []

    async def slow() -> int:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return 0

    with pytest.raises(ValueError, match="pool table refused the write") as raised:
        asyncio.run(run_all([slow(), _fail("pool table refused the write")]))
    assert raised.value.__traceback__ is not None
    assert cancelled == [True]


def test_several_failures_stay_a_group():
    with pytest.raises(ExceptionGroup) as raised:
        asyncio.run(run_all([_fail("a"), _fail("b")]))
    assert sorted(str(e) for e in raised.value.exceptions) == ["a", "b"]
