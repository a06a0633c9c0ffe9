"""Ownership of background asyncio tasks: named, crash-logged, cancelled in order."""

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskOwner:
    """Creates named tasks, logs any that crash, and cancels them in reverse order on close."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: list[asyncio.Task[Any]] = []

    def spawn(self, name: str, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start ``coroutine`` as a task called ``<owner>/<name>``."""
        task = asyncio.create_task(coroutine, name=f"{self._owner}/{name}")
        task.add_done_callback(self._on_done)
        self._tasks.append(task)
        return task

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error(
                "background task crashed",
                exc_info=error,
                extra={"task": task.get_name()},
            )

    async def close(self, timeout_seconds: float = 10.0) -> None:
        """Cancel every task, newest first, and wait up to ``timeout_seconds`` for them."""
        for task in reversed(self._tasks):
            task.cancel()
        pending = [task for task in self._tasks if not task.done()]
        if pending:
            _done, still_pending = await asyncio.wait(pending, timeout=timeout_seconds)
            for task in still_pending:
                log.warning(
                    "task did not stop before the shutdown deadline",
                    extra={"task": task.get_name(), "timeout_seconds": timeout_seconds},
                )
        self._tasks.clear()
