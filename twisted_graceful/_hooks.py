# -*- test-case-name: tests.test_hooks -*-
"""
Shutdown hooks: callables run one after another, in the order they were
added, once every endpoint has drained.
"""

from __future__ import annotations

from typing import Any, Callable

from attrs import define, field, frozen
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

DEFAULT_HOOK_TIMEOUT = 10.0

_log = Logger()


@frozen
class HookOutcome:
    """
    How one hook ended: C{"ok"}, C{"failed"}, C{"timeout"} or C{"skipped"}.
    """

    name: str
    outcome: str
    elapsed: float


@frozen
class _Hook:
    name: str
    call: Callable[[], Any]
    timeout: float | None


@define
class ShutdownHooks:
    """
    An ordered list of shutdown hooks.

    @ivar _clock: Times each hook.
    """

    _clock: IReactorTime
    _hooks: list[_Hook] = field(factory=list)
    _current: Deferred[Any] | None = None
    _cutShort: bool = False

    def add(
        self,
        hook: Callable[..., Any],
        *args: object,
        timeout: float | None = DEFAULT_HOOK_TIMEOUT,
        name: str | None = None,
        **kwargs: object,
    ) -> None:
        """
        Add C{hook}, to be called as C{hook(*args, **kwargs)} after the
        hooks already added.  It may return a L{Deferred} or be a coroutine
        function.

        @param timeout: Seconds after which the hook is cancelled and the
            next one runs; L{None} for no limit.
        @param name: A name for log events; the hook's qualified name by
            default.
        @raise TypeError: C{hook} is not callable.
        """
        if not callable(hook):
            raise TypeError(f"A shutdown hook must be callable, but {hook!r} is not.")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"A shutdown hook's timeout must be positive or None, not {timeout!r}.")
        label = name or getattr(hook, "__qualname__", None) or repr(hook)

        def call() -> Any:
            result = hook(*args, **kwargs)
            if hasattr(result, "__await__") and not isinstance(result, Deferred):
                return Deferred.fromCoroutine(result)
            return result

        self._hooks.append(_Hook(label, call, timeout))

    def __len__(self) -> int:
        return len(self._hooks)

    def run(self) -> Deferred[list[HookOutcome]]:
        """
        Run every hook in order.  A hook that fails or times out is logged and
        the next one runs.

        @return: A L{Deferred} that fires with the outcome of each hook, and
            never fails.
        """
        return Deferred.fromCoroutine(self._runAll())

    def cutShort(self) -> None:
        """
        Cancel the hook running now and skip the rest.
        """
        self._cutShort = True
        if self._current is not None:
            self._current.cancel()

    async def _runAll(self) -> list[HookOutcome]:
        outcomes = []
        for hook in self._hooks:
            if self._cutShort:
                outcomes.append(HookOutcome(hook.name, "skipped", 0.0))
                _log.warn("Shutdown hook {hook} skipped: shutdown cut short", hook=hook.name, phase="hook")
                continue
            outcomes.append(await self._runOne(hook))
        return outcomes

    async def _runOne(self, hook: _Hook) -> HookOutcome:
        started = self._clock.seconds()
        d = maybeDeferred(hook.call)
        if hook.timeout is not None:
            d.addTimeout(hook.timeout, self._clock)
        self._current = d
        try:
            await d
        except BaseException as e:
            elapsed = self._clock.seconds() - started
            if isinstance(e, (TimeoutError, CancelledError)):
                outcome = "skipped" if self._cutShort else "timeout"
                _log.warn(
                    "Shutdown hook {hook} cancelled after {elapsed:.3f} s ({outcome})",
                    hook=hook.name,
                    elapsed=elapsed,
                    outcome=outcome,
                    timeout=hook.timeout,
                    phase="hook",
                )
                return HookOutcome(hook.name, outcome, elapsed)
            _log.failure(
                "Shutdown hook {hook} failed after {elapsed:.3f} s",
                Failure(),
                LogLevel.error,
                hook=hook.name,
                elapsed=elapsed,
                outcome="failed",
                phase="hook",
            )
            return HookOutcome(hook.name, "failed", elapsed)
        finally:
            self._current = None
        elapsed = self._clock.seconds() - started
        _log.info(
            "Shutdown hook {hook} finished in {elapsed:.3f} s",
            hook=hook.name,
            elapsed=elapsed,
            outcome="ok",
            phase="hook",
        )
        return HookOutcome(hook.name, "ok", elapsed)

