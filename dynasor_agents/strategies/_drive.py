"""Sans-IO strategy cores and the one async driver that runs them.

A strategy's logic is a generator that *yields actions* and *receives results*;
it never touches the network, a clock or an event loop. :func:`drive` is the only
code that performs actions: it launches sample requests, waits for them one at a
time, cancels what the core no longer needs and talks to the server. Every
strategy reuses it, and sync methods reach it through the async path.

Actions and what the driver sends back into the generator:

=====================  ======================================================
action                 sent back
=====================  ======================================================
``Launch(n, ...)``     ``None`` once ``n`` requests of ``request`` are running
``Await()``            the next finished :class:`Completion` (in finish order);
                       a failed request is thrown into the generator instead
``Cancel()``           the completions that had finished but were not yet
                       delivered (their tokens are spent: nothing is lost);
                       the rest are cancelled
``Emit(snapshot)``     ``None`` after the snapshot was published
``Finish(stop)``       ``None`` after the server was told (stop or finish)
=====================  ======================================================

A round-based core waits for each round's requests with :func:`await_round`
(``yield from``), which also handles the server refusing some of them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import logging
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from dynasor_agents.controller import StopReason
from dynasor_agents.errors import (
    BudgetExhaustedError,
    DeadlineExceededError,
    DynasorError,
    ProgramStoppedError,
)
from dynasor_agents.program import Program
from dynasor_agents.protocol import Hints

__all__ = [
    "Action",
    "Await",
    "Cancel",
    "Completion",
    "Core",
    "Emit",
    "Finish",
    "Launch",
    "SampleCall",
    "Sampler",
    "await_round",
    "drive",
    "server_ended",
    "stopped_reason",
]

R = TypeVar("R")
logger = logging.getLogger("dynasor_agents")


@dataclass(frozen=True)
class Completion:
    """One finished sample: its text, the tokens it cost and what the model said of it.

    Attributes:
        text: The generated text.
        prompt_tokens: Prompt tokens the request used.
        completion_tokens: Completion tokens it generated.
        finish_reason: Why generation ended (``stop``, ``length``, ...), if known.
        logprobs: Token log-probabilities, when the sampler asked for them.
        tag: The ``tag`` of the :class:`Launch` that started it (set by the driver).
    """

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    logprobs: Any = None
    tag: Any = None


@dataclass(frozen=True)
class Launch:
    """Start ``n`` requests, each capped at ``max_tokens``, carrying ``hints``.

    Attributes:
        n: How many requests.
        max_tokens: Completion-token cap of each.
        hints: The program's hints, sent as headers.
        request: What to send; the strategy's sampler interprets it (``None``:
            the program's own prompt).
        tag: Handed back on each resulting :class:`Completion`, so a core with
            several kinds of requests in flight knows what answered.
    """

    n: int
    max_tokens: int | None = None
    hints: Hints = field(default_factory=Hints)
    request: Any = None
    tag: Any = None


@dataclass(frozen=True)
class SampleCall:
    """One request the driver asks the sampler to send."""

    request: Any
    max_tokens: int | None
    headers: dict[str, str]


@dataclass(frozen=True)
class Await:
    """Wait for the next running request to finish."""


@dataclass(frozen=True)
class Cancel:
    """Cancel every running request of the program."""


@dataclass(frozen=True)
class Emit(Generic[R]):
    """Publish a progress snapshot (to ``stream`` and to callbacks)."""

    snapshot: R


@dataclass(frozen=True)
class Finish:
    """Tell the server the program is over: ``stop`` aborts, else it finishes."""

    stop: bool


Action = Launch | Await | Cancel | Emit[Any] | Finish
Core = Generator[Action, Any, R]
Sampler = Callable[[SampleCall], Awaitable[Completion]]
"""``sampler(call)`` sends one request and returns its completion."""


def stopped_reason(exc: ProgramStoppedError) -> StopReason:
    """Why a program the server stopped ended: its deadline, or another party's stop.

    Example:
        >>> stopped_reason(DeadlineExceededError("too late")).value
        'deadline'
        >>> stopped_reason(ProgramStoppedError("stopped")).value
        'server_stopped'
    """
    if isinstance(exc, DeadlineExceededError):
        return StopReason.DEADLINE
    return StopReason.SERVER_STOPPED


def server_ended(reason: str | None) -> bool:
    """Whether the server ended the program: another party's stop, or its deadline.

    Example:
        >>> server_ended(StopReason.DEADLINE), server_ended(StopReason.CERTAIN)
        (True, False)
    """
    return reason in (StopReason.SERVER_STOPPED, StopReason.DEADLINE)


def await_round(
    pending: int,
    *,
    take: Callable[[Completion], Launch | None],
    settled: Callable[[int], StopReason | None],
    answered: Callable[[], bool],
) -> Generator[Action, Any, tuple[StopReason | None, list[Completion]]]:
    """Wait for the ``pending`` requests of a round; when it stops early, cancel the rest.

    Used with ``yield from`` by a core after it launched a round: it yields an
    :class:`Await` per request and hands each completion to ``take``. A request
    the server refused (:class:`~dynasor_agents.errors.BudgetExhaustedError`:
    the program's budget is spent) ends the round with ``MAX_TOKENS``, but only
    after the requests the server admitted before it came in: they hold their
    tokens and still finish. A stopped program
    (:class:`~dynasor_agents.errors.ProgramStoppedError`) ends the round at
    once with ``SERVER_STOPPED`` (``DEADLINE`` when the server stopped it
    because its deadline passed). When the core has nothing to answer with
    (``answered()`` is false) either error is raised instead. The core decides,
    in its own terms, what a completion adds (``take``), whether it has
    something to answer with (``answered``) and whether it is settled before
    the round is over (``settled``).

    Args:
        pending: Requests of the round that are running.
        take: Records one completion; may return a follow-up :class:`Launch`
            (e.g. a request scoring the new candidate), which is yielded and
            waited for as part of the round.
        settled: Asked after a completion that launched nothing, while
            requests are still pending, with their number: a stop reason ends
            the round there (e.g. ``CERTAIN`` whatever they return).
        answered: Whether the core has something to answer with.

    Returns:
        Why the round stopped (``None``: every request came in and nothing
        said stop) and, when it stopped, the completions that had finished
        but were not yet taken: a :class:`Cancel` cancelled the rest. The core
        records these stragglers itself (``take`` never sees them).

    Raises:
        ProgramStoppedError: The server stopped the program before the core
            had something to answer with.
        BudgetExhaustedError: The server refused a request of the round and,
            once the admitted ones came in, the core had nothing to answer with.

    Example:
        >>> from dynasor_agents.errors import BudgetExhaustedError
        >>> texts = []
        >>> waiting = await_round(
        ...     3,
        ...     take=lambda done: texts.append(done.text),
        ...     settled=lambda pending: None,
        ...     answered=lambda: bool(texts),
        ... )
        >>> next(waiting), waiting.send(Completion("a"))
        (Await(), Await())
        >>> waiting.throw(BudgetExhaustedError("budget spent"))  # the third was admitted
        Await()
        >>> waiting.send(Completion("b"))  # it came in: stop, cancel whatever still runs
        Cancel()
        >>> try:
        ...     waiting.send([])  # the driver answers Cancel with the stragglers
        ... except StopIteration as end:
        ...     reason, stragglers = end.value
        >>> reason.value, stragglers, texts
        ('max_tokens', [], ['a', 'b'])
    """
    reason: StopReason | None = None
    refused: BudgetExhaustedError | None = None
    while pending:
        try:
            done: Completion = yield Await()
        except ProgramStoppedError as exc:
            if not answered():
                raise
            reason = stopped_reason(exc)
            break
        except BudgetExhaustedError as exc:
            # The server refused this request: the budget is spent. Requests it
            # admitted earlier hold their tokens and still finish: keep them.
            refused = exc
            pending -= 1
            continue
        pending -= 1
        follow_up = take(done)
        if follow_up is not None:
            yield follow_up
            pending += follow_up.n
            continue
        if pending:
            reason = settled(pending)
            if reason is not None:
                break
    if refused is not None and reason is None:
        if not answered():
            raise refused
        reason = StopReason.MAX_TOKENS  # the server says the budget is spent
    if reason is None:
        return None, []
    stragglers: list[Completion] = yield Cancel()
    return reason, stragglers


async def _tagged(sampler: Sampler, call: SampleCall, tag: Any) -> Completion:
    done = await sampler(call)
    return done if tag is None else dataclasses.replace(done, tag=tag)


async def _tell_server(program: Program, *, stop: bool) -> None:
    if stop:
        await program.stop()
    elif program.client is not None:
        await program.client.finish(program.id)


async def drive(
    core: Core[R],
    *,
    sampler: Sampler,
    program: Program,
    emit: Callable[[Any], Awaitable[None]] | None = None,
    nested: bool = False,
) -> R:
    """Run a sans-IO strategy core to completion and return its result.

    Args:
        core: The strategy's generator of actions.
        sampler: Sends one sample request.
        program: The program whose headers every request carries.
        emit: Receives each progress snapshot.
        nested: The core runs inside another strategy's program (composition):
            ``Finish`` and failures do not stop or finish the program on the
            server, and ``Cancel`` only cancels this core's own requests.

    Raises:
        DynasorError: From the core or a request; ``program_id`` is filled in.
    """
    running: dict[asyncio.Task[Completion], int] = {}  # task -> launch order
    launched = itertools.count()
    finished: collections.deque[asyncio.Task[Completion]] = collections.deque()
    told_server = nested

    async def cancel_own() -> None:
        pending = [t for t in running if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    try:
        action = next(core)
        while True:
            reply: Any = None
            if isinstance(action, Launch):
                hints = action.hints
                if nested:  # one budget for the whole: the enclosing strategy's
                    hints = hints.model_copy(update={"budget": None})
                call = SampleCall(action.request, action.max_tokens, program.headers(hints))
                for _ in range(action.n):
                    task = asyncio.ensure_future(_tagged(sampler, call, action.tag))
                    running[program.track(task)] = next(launched)
            elif isinstance(action, Await):
                if not finished:
                    if not running:
                        raise RuntimeError("strategy awaited a sample with none running")
                    done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    # Deliver simultaneous finishes in launch order: runs are reproducible.
                    finished.extend(sorted(done, key=running.__getitem__))
                    for task in done:
                        del running[task]
                task = finished.popleft()
                exc = task.exception()
                if exc is not None:
                    action = core.throw(exc)
                    continue
                reply = task.result()
            elif isinstance(action, Cancel):
                await cancel_own()
                finished.extend(t for t in running if t.done() and not t.cancelled())
                reply = [t.result() for t in finished if t.exception() is None]
                running.clear()
                finished.clear()
            elif isinstance(action, Emit):
                if emit is not None:
                    await emit(action.snapshot)
            elif isinstance(action, Finish) and nested:
                pass  # the enclosing strategy owns the program's end
            elif isinstance(action, Finish):
                told_server = True
                try:
                    await _tell_server(program, stop=action.stop)
                except Exception as exc:  # advisory: never lose a finished result over it
                    logger.warning("could not tell the server %s is over: %s", program.id, exc)
            else:  # pragma: no cover - guarded by the Action union
                raise TypeError(f"unknown strategy action {action!r}")
            action = core.send(reply)
    except StopIteration as done_:
        result: R = done_.value
        return result
    except DynasorError as exc:
        if exc.program_id is None:
            exc.program_id = program.id
        raise
    finally:
        await cancel_own()
        for task in (*running, *finished):  # retrieve dropped outcomes: no stray warnings
            if task.done() and not task.cancelled():
                task.exception()
        if not told_server:
            # The core failed or was cancelled: stop the program so nothing keeps running.
            with contextlib.suppress(Exception):
                await asyncio.shield(_tell_server(program, stop=True))
        core.close()
