r"""Probed chain-of-thought (Dynasor-CoT) as a sans-IO core.

A reasoning model thinks in chunks of ``chunk_tokens`` tokens, each a raw
continuation of the text so far (so the server's prefix cache is reused).
After each chunk the core sends a short *probe*: the reasoning so far plus an
answer-forcing suffix (``... \boxed{``), decoded greedily for a few tokens.
The probe runs concurrently with the next chunk. Once the last ``window``
probes give the same non-empty answer and none of them hedges ("wait", "hmm",
...), the answer is settled: the running chunk is cancelled and the program
stops, leaving the rest of the token cap unspent. How a probe is phrased, read
and judged lives in :mod:`dynasor_agents.strategies._cot_probes`; this module
schedules the chunks and probes, accounts for them and reports the result.

Example (the model settles on 42; two agreeing probes stop it):
    >>> from dynasor_agents.strategies._drive import Completion
    >>> core = probed_cot_core(prompt_text="Q: 6*7?\n", program_id="doc", chunk_tokens=8,
    ...                        window=2, max_tokens=64, probe="dynasor")
    >>> def chunk(text):  # a chunk that used all its 8 tokens
    ...     return Completion(text, 5, 8, finish_reason="length", tag="chunk")
    >>> next(core).tag, core.send(None)                 # the first chunk, then wait
    ('chunk', Await())
    >>> probe = core.send(chunk("6*7 is 42."))          # a probe of the reasoning so far
    >>> probe.request.prompt.endswith("**Final Answer**: \\boxed{")
    True
    >>> core.send(None).tag                             # and the next chunk alongside it
    'chunk'
    >>> [type(core.send(None)).__name__ for _ in range(2)]  # a snapshot, then wait
    ['Emit', 'Await']
    >>> type(core.send(Completion("42} done", 9, 3, tag=probe.tag))).__name__
    'Emit'
    >>> core.send(None), core.send(chunk(" Check: 42.")).tag.index
    (Await(), 1)
    >>> [type(core.send(None)).__name__ for _ in range(3)]  # next chunk, snapshot, wait
    ['Launch', 'Emit', 'Await']
    >>> core.send(Completion("42}", 9, 2, tag=ProbeTag(1, 16, probe.tag.suffix)))
    Cancel()
    >>> core.send([])                                   # nothing had finished: stop
    Finish(stop=True)
    >>> try:
    ...     core.send(None)
    ... except StopIteration as done:
    ...     result = done.value
    >>> result.answer, result.stop_reason.value, result.probe_answers
    ('42', 'certain', ['42', '42'])
    >>> result.reasoning_tokens, result.probe_tokens, result.tokens_saved_estimate
    (16, 5, 48)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from dynasor_agents.certainty import AnswerExtractor, extract_answer, normalize_answer
from dynasor_agents.controller import StopReason
from dynasor_agents.errors import BudgetExhaustedError, InvalidInputError, ProgramStoppedError
from dynasor_agents.protocol import Hints
from dynasor_agents.strategies._completions import TextRequest
from dynasor_agents.strategies._cot_probes import (
    DEFAULT_HEDGES,
    Probe,
    close_boxed,
    hedges_in,
    probe_agreement,
    probe_suffix_for,
    probes_agree,
)
from dynasor_agents.strategies._drive import (
    Await,
    Cancel,
    Completion,
    Core,
    Emit,
    Finish,
    Launch,
    server_ended,
    stopped_reason,
)

__all__ = [
    "CHUNK_TAG",
    "ProbeTag",
    "ProbedChainOfThoughtResult",
    "check_config",
    "probed_cot_core",
]

CHUNK_TAG: Final = "chunk"
"""The tag of a reasoning chunk request (a probe request carries a :class:`ProbeTag`)."""


@dataclass(frozen=True)
class ProbeTag:
    """The tag of a probe request: launch ``index``, reasoning tokens seen, its suffix."""

    index: int
    at_tokens: int
    suffix: str


class ProbedChainOfThoughtResult(BaseModel):
    """The outcome of a probed chain-of-thought program (or a snapshot while it runs).

    Attributes:
        program_id: The program's id (also on the server).
        answer: The final answer, normalized (``None`` if there is none).
        answer_text: The final answer as the model wrote it.
        reasoning: The reasoning text so far, without any probe.
        delta: Reasoning added since the previous snapshot; concatenating the
            deltas of every snapshot and the result gives ``reasoning``.
        probes: Finished probes, in launch order.
        chunks: Reasoning chunks decoded.
        reasoning_tokens: Completion tokens of the chunks.
        probe_tokens: Completion tokens of the probes (their cost).
        prompt_tokens: Prompt tokens of every request (mostly prefix-cache hits).
        completion_tokens: Completion tokens of every request.
        tokens_saved_estimate: When the probes settled the answer, the part of
            the reasoning cap (``max_tokens``) left unspent; an estimate of what
            was saved, since the model might have ended sooner on its own. 0
            otherwise.
        ended_naturally: The model ended its reasoning on its own (its answer
            is taken from the text; ``stop_reason`` is then ``CERTAIN``).
        certainty: Share of the last ``window`` probes that agree (1.0 once settled).
        trajectory: ``certainty`` after each probe.
        stop_reason: Why it stopped; ``None`` in a snapshot of a running program.
        final: ``False`` for progress snapshots, ``True`` for the result.
    """

    model_config = ConfigDict(frozen=True)

    program_id: str
    answer: str | None = None
    answer_text: str | None = None
    reasoning: str = ""
    delta: str = ""
    probes: list[Probe] = Field(default_factory=list)
    chunks: int = 0
    reasoning_tokens: int = 0
    probe_tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_saved_estimate: int = 0
    ended_naturally: bool = False
    certainty: float = 0.0
    trajectory: list[float] = Field(default_factory=list)
    stop_reason: StopReason | None = None
    final: bool = False

    @property
    def probe_answers(self) -> list[str | None]:
        """Each probe's answer, in launch order."""
        return [p.answer for p in self.probes]

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


# --------------------------------------------------------------------------- the core


def check_config(
    *, chunk_tokens: int, window: int, max_tokens: int, probe_tokens: int, probe: str
) -> None:
    """Raise :class:`InvalidInputError` naming the first out-of-range parameter."""
    for name, value in (
        ("chunk_tokens", chunk_tokens),
        ("window", window),
        ("max_tokens", max_tokens),
        ("probe_tokens", probe_tokens),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"{name} must be an int >= 1, got {value!r}")
    if not isinstance(probe, str) or not probe.strip():
        raise InvalidInputError(f"probe must be a preset name or a suffix, got {probe!r}")


def probed_cot_core(
    *,
    prompt_text: str,
    program_id: str,
    chunk_tokens: int = 256,
    window: int = 3,
    max_tokens: int = 4096,
    probe: str = "auto",
    probe_tokens: int = 32,
    hedges: Sequence[str] = DEFAULT_HEDGES,
    extractor: AnswerExtractor = extract_answer,
    probe_extractor: AnswerExtractor | None = None,
    key: Callable[[str], str] = normalize_answer,
    agree: Callable[[Sequence[Probe], int], bool] = probes_agree,
    temperature: float | None = None,
) -> Core[ProbedChainOfThoughtResult]:
    """The probed chain-of-thought program as a generator of actions.

    Args:
        prompt_text: The formatted prompt the reasoning continues.
        program_id: Put on the result.
        chunk_tokens: Tokens per reasoning chunk (one probe after each).
        window: Probes that must agree to stop.
        max_tokens: Cap on the reasoning (chunk) tokens; probes come on top.
        probe: Suffix preset (:data:`PROBE_SUFFIXES`), ``"auto"`` or a literal suffix.
        probe_tokens: Completion-token cap of each probe.
        hedges: Words that make a probe unsure.
        extractor: The answer of a reasoning that ended on its own.
        probe_extractor: The answer in a probe's output (default: up to the
            closing ``}`` when the suffix ends in ``{``, else ``extract_answer``).
        key: Normalizes answers for comparison.
        agree: Whether the probes so far settle the answer (``probes, window``).
        temperature: Sampling temperature of the chunks (``None``: the model's).

    Raises:
        InvalidInputError: A parameter is out of range.
        ProgramStoppedError: The server refused the program before any reasoning.
        BudgetExhaustedError: The server's budget was spent before any reasoning.
    """
    check_config(
        chunk_tokens=chunk_tokens,
        window=window,
        max_tokens=max_tokens,
        probe_tokens=probe_tokens,
        probe=probe,
    )
    if not prompt_text:
        raise InvalidInputError("prompt_text is empty")

    reasoning, emitted = "", 0
    slots: list[Probe | None] = []  # by launch index; None while running
    trajectory: list[float] = []
    chunks = reasoning_tokens = probe_used = prompt_used = completion_used = 0
    chunk_cap: int | None = None  # cap of the running chunk (None: no chunk running)
    reason: StopReason | None = None
    natural = False
    answer: str | None = None

    def done_probes() -> list[Probe]:
        return [p for p in slots if p is not None]

    def certainty() -> float:
        return 1.0 if reason is StopReason.CERTAIN else probe_agreement(done_probes(), window)

    def hints() -> Hints:
        return Hints(certainty=certainty() if done_probes() else None)

    def next_chunk() -> Launch:
        nonlocal chunk_cap
        chunk_cap = min(chunk_tokens, max_tokens - reasoning_tokens)
        request = TextRequest(prompt_text + reasoning, temperature=temperature)
        return Launch(1, chunk_cap, hints(), request, tag=CHUNK_TAG)

    def next_probe() -> Launch:
        slots.append(None)
        suffix = probe_suffix_for(prompt_text + reasoning, probe)
        request = TextRequest(prompt_text + reasoning + suffix, temperature=0.0)
        tag = ProbeTag(len(slots) - 1, reasoning_tokens, suffix)
        return Launch(1, probe_tokens, hints(), request, tag=tag)

    def record(done: Completion) -> Probe | None:
        """Account for a finished request; returns the probe it was, if one."""
        nonlocal reasoning, chunks, reasoning_tokens, probe_used, prompt_used, completion_used
        nonlocal chunk_cap, natural
        prompt_used += done.prompt_tokens
        completion_used += done.completion_tokens
        if done.tag == CHUNK_TAG:
            cap = chunk_cap or chunk_tokens
            chunk_cap = None
            reasoning += done.text
            chunks += 1
            if done.finish_reason == "length" or (
                done.finish_reason is None and done.completion_tokens >= cap
            ):
                reasoning_tokens += done.completion_tokens or cap  # no usage: assume all
            else:
                reasoning_tokens += done.completion_tokens
                natural = True
            return None
        tag: ProbeTag = done.tag
        ends_open = tag.suffix.rstrip().endswith("{")
        find = probe_extractor or (close_boxed if ends_open else extractor)
        said = find(done.text)
        probe_used += done.completion_tokens
        slots[tag.index] = Probe(
            index=tag.index,
            at_tokens=tag.at_tokens,
            answer=said,
            key=key(said) if said else None,
            hedged=hedges_in(done.text, hedges),
            text=done.text,
            completion_tokens=done.completion_tokens,
        )
        return slots[tag.index]

    def settled_by(index: int) -> Probe | None:
        """The latest probe of a finished window around ``index`` that agrees, if any."""
        for end in range(index, min(index + window, len(slots))):
            start = end - window + 1
            span = slots[max(start, 0) : end + 1]
            done = [p for p in span if p is not None]
            if start >= 0 and len(done) == window and agree(done, window):
                return done[-1]
        return None

    def snapshot(final: bool) -> ProbedChainOfThoughtResult:
        nonlocal emitted
        delta, emitted = reasoning[emitted:], len(reasoning)
        early = final and reason is StopReason.CERTAIN and not natural
        return ProbedChainOfThoughtResult(
            program_id=program_id,
            answer=key(answer) if answer else None,
            answer_text=answer,
            reasoning=reasoning,
            delta=delta,
            probes=done_probes(),
            chunks=chunks,
            reasoning_tokens=reasoning_tokens,
            probe_tokens=probe_used,
            prompt_tokens=prompt_used,
            completion_tokens=completion_used,
            tokens_saved_estimate=max(max_tokens - reasoning_tokens, 0) if early else 0,
            ended_naturally=natural,
            certainty=certainty(),
            trajectory=list(trajectory),
            stop_reason=reason if final else None,
            final=final,
        )

    yield next_chunk()
    while chunk_cap is not None or None in slots:
        try:
            done: Completion = yield Await()
        except (ProgramStoppedError, BudgetExhaustedError) as exc:
            if not reasoning:
                raise
            if isinstance(exc, ProgramStoppedError):
                reason = stopped_reason(exc)
            else:
                reason = StopReason.MAX_TOKENS
            break
        probe_done = record(done)
        if probe_done is None:  # a chunk
            if natural:
                reason = StopReason.FINISHED  # the model settled on its own
                answer = extractor(reasoning)
                break
            yield next_probe()
            if reasoning_tokens < max_tokens:
                yield next_chunk()  # runs alongside the probe
        else:
            trajectory.append(probe_agreement(done_probes(), window))
            agreed = settled_by(probe_done.index)
            if agreed is not None:
                reason, answer = StopReason.CERTAIN, agreed.answer
                trajectory[-1] = 1.0
                break
        yield Emit(snapshot(final=False))

    if chunk_cap is not None or None in slots:
        stragglers: list[Completion] = yield Cancel()
        ended = natural  # a cancelled chunk's ending does not change why the program stopped
        for done in sorted(stragglers, key=lambda d: d.tag != CHUNK_TAG):
            record(done)
        natural = ended  # cancelled probes keep an empty slot: indexes stay unique
    if reason is None:
        reason = StopReason.MAX_TOKENS  # the reasoning reached its cap
    if answer is None and natural:  # ended without an answer in the text: force one
        yield next_probe()
        with contextlib.suppress(ProgramStoppedError, BudgetExhaustedError):
            forced = record((yield Await()))
            answer = forced.answer if forced else None
    if answer is None:  # the latest probe that answered, else the reasoning itself
        answered = [p for p in done_probes() if p.answer]
        answer = answered[-1].answer if answered else extractor(reasoning)
    early = reason is StopReason.CERTAIN and not natural
    yield Finish(stop=early or server_ended(reason))
    return snapshot(final=True)
