"""Share one completion-token budget across many programs: a ledger and allocation policies.

A :class:`TokenPool` is the ledger of a batch (the paper's batch mode): every
request *reserves* its ``max_tokens`` before it is sent and *settles* with the
completion tokens it reported when it returns; the unused part goes back to the
pool. So ``spent + reserved <= total`` holds at all times and the batch never
spends more than its budget (as long as the model honours ``max_tokens``, which
vLLM does; a model that does not is charged anyway and the excess is counted in
:attr:`TokenPool.overrun`).

Allocation is expressed as :class:`~dynasor_agents.controller.Policy` objects a
member program's :class:`~dynasor_agents.controller.CertaintyController`
composes, so the same objects work in one program and in a batch:

* :class:`~dynasor_agents.controller.threshold` stops settled programs, which
  leaves their tokens to the uncertain ones;
* :class:`budget_curve` maps Certaindex to the tokens a program may still spend;
* :class:`pool_share` makes a program a pool member: it sizes each round so
  that ``samples * per-sample max_tokens`` fits in what the pool grants and
  stops the program (``MAX_TOKENS``) when not even one sample can be covered.

**Who gets the tokens when the pool is scarce.** A member asks for its next
round when it decides it (its *ask*); its grant is decided right then, as

    grant = min(ask, free - claims)

where ``claims`` holds back, for the *other* members:

1. one sample (the member's *floor*) for every member that has not started
   yet, so every question gets a first sample before any gets a next round
   (questions start in join order: a member that has not started may take
   its own floor from what the earlier ones leave);
2. a whole round (its latest ask) for every member *ranked ahead of* the
   asking one that is *between rounds* (no tokens held, no request running),
   i.e. about to ask. The pool's :class:`~dynasor_agents.Ranking` orders
   members by their latest Certaindex (the latest their program reported, at
   any check), ties going to the member that joined first. The default,
   :class:`~dynasor_agents.lowest_certainty`, ranks the most uncertain first;
   :class:`~dynasor_agents.by_gain` ranks the most to gain first.

A member in the middle of a round claims nothing more: it has its round. So
among the members waiting for tokens the top-ranked is served first,
grants are deterministic given the order of the asks, and when the pool is not
scarce every member gets its whole ask.

Example (two members; the more uncertain one keeps room for its next round):
    >>> pool = TokenPool(1000)
    >>> sure, unsure = pool.join("sure"), pool.join("unsure")
    >>> unsure.certainty, unsure.ask = 0.1, 600   # between rounds: claims 600
    >>> pool.grant(sure, 800, certainty=0.7)       # 1000 free - 600 claimed
    400
    >>> pool.grant(unsure, 600, certainty=0.1)     # the most uncertain: all it asks
    600
    >>> pool.free, pool.reserved
    (0, 1000)
"""

from __future__ import annotations

from collections.abc import Sequence

from dynasor_agents._ranking import Piecewise, Ranking, lowest_certainty
from dynasor_agents.controller import Policy, ProgramState, StopReason, Verdict
from dynasor_agents.errors import BudgetExhaustedError, InvalidInputError

__all__ = ["PoolMember", "TokenPool", "budget_curve", "pool_share"]


def _positive(name: str, value: int | None) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise InvalidInputError(f"{name} must be an int >= 1 or None, got {value!r}")
    return value


class TokenPool:
    """The completion-token ledger of one batch.

    Args:
        total: Completion tokens the whole batch may spend (``None``: no limit;
            the pool then only counts).
        ranking: Which waiting member is served first when tokens are scarce
            (default :class:`~dynasor_agents.lowest_certainty`).

    Attributes:
        total: The budget.
        ranking: The ranking.
        spent: Completion tokens the members' requests reported.
        reserved: Tokens granted to members and not yet spent or given back.
        peak: The highest ``spent + reserved`` seen (never above ``total``
            unless a model overran its ``max_tokens``).
        overrun: Tokens requests reported beyond what they had reserved.

    Example:
        >>> pool = TokenPool(500)
        >>> member = pool.join("q0")
        >>> cap, held = member.open_call(200)   # reserve before sending
        >>> member.close_call(held, used=120)   # settle with the usage reported
        >>> pool.spent, pool.reserved, pool.free
        (120, 0, 380)
    """

    def __init__(self, total: int | None = None, *, ranking: Ranking | None = None) -> None:
        if ranking is not None and not isinstance(ranking, Ranking):
            raise InvalidInputError(f"ranking must be a Ranking, got {ranking!r}")
        self.total = _positive("total", total)
        self.ranking: Ranking = ranking if ranking is not None else lowest_certainty()
        self.spent = 0
        self.reserved = 0
        self.peak = 0
        self.overrun = 0
        self._members: list[PoolMember] = []

    @property
    def free(self) -> int | None:
        """Tokens neither spent nor reserved (``None`` without a total)."""
        if self.total is None:
            return None
        return max(0, self.total - self.spent - self.reserved)

    @property
    def members(self) -> tuple[PoolMember, ...]:
        """Every member that joined, in join order."""
        return tuple(self._members)

    def join(
        self,
        name: str | None = None,
        *,
        limit: int | None = None,
        ask: int = 0,
        floor: int = 0,
    ) -> PoolMember:
        """Add a member.

        Args:
            name: For reports and errors (default: its join index).
            limit: Completion tokens this member may spend at most (a
                per-program cap on top of the pool).
            ask: Its expected first round, claimed for it (when it is more
                uncertain than the asking member) until it asks itself.
            floor: One sample's tokens, held back for it until it starts.
        """
        order = len(self._members)
        member = PoolMember(self, name or str(order), order, limit, ask, floor)
        self._members.append(member)
        return member

    def grantable(self, member: PoolMember) -> int | None:
        """Tokens ``member`` may take from the pool now (``None``: no limit).

        What is free less the claims of the other members (see the module's
        rule), within the member's own ``limit``.
        """
        room: int | None = None
        if self.total is not None:
            key = self.ranking.key
            mine = (key(member.certainty), member.order)
            free = self.free or 0
            claims = owed_earlier = 0
            for other in self._members:
                if not other.active or other is member:
                    continue
                idle = other.held == 0 and other.in_flight == 0
                if idle and (key(other.certainty), other.order) < mine:
                    claims += other.ask  # about to ask for a round, and ranked ahead
                elif not other.started:
                    claims += min(other.floor, other.ask)  # owed a first sample
                if not other.started and other.order < member.order:
                    owed_earlier += min(other.floor, other.ask)
            room = free - claims
            if not member.started:  # its own first sample comes before later ones'
                room = max(room, min(member.floor, free - owed_earlier))
        if member.limit is not None:
            own = member.limit - member.spent - member.held
            room = own if room is None else min(room, own)
        return None if room is None else max(0, room)

    def grant(self, member: PoolMember, need: int, *, certainty: float) -> int:
        """Record ``member``'s ask for its next round and reserve what it may have.

        Returns:
            The tokens reserved for the member (at most ``need``); its requests
            draw on them first.

        Example:
            >>> pool = TokenPool(100)
            >>> pool.grant(pool.join(), 150, certainty=0.0)
            100
        """
        if need < 0:
            raise InvalidInputError(f"need must be >= 0, got {need!r}")
        member.certainty = float(certainty)
        member.ask = need
        room = self.grantable(member)
        member.started = True
        granted = need if room is None else min(need, room)
        if granted < need:
            member.limited = True
        member.voucher += granted
        self._reserve(member, granted)
        return granted

    def _reserve(self, member: PoolMember, tokens: int) -> None:
        member.held += tokens
        self.reserved += tokens
        self.peak = max(self.peak, self.spent + self.reserved)

    def _unreserve(self, member: PoolMember, tokens: int) -> None:
        member.held -= tokens
        self.reserved -= tokens


class PoolMember:
    """One program's account in a :class:`TokenPool` (made by :meth:`TokenPool.join`).

    Attributes:
        name: Its name in reports.
        order: Join order (breaks Certaindex ties: earlier first).
        limit: Its own cap on completion tokens, if any.
        certainty: Its latest Certaindex (what the pool's ranking orders by).
        ask: Tokens its latest round asked for (0 once it stopped).
        floor: One sample's tokens, owed to it until it starts.
        started: It asked for a round (or sent a request) already.
        spent: Completion tokens its requests reported.
        held: Tokens reserved for it now (unused grant plus running requests).
        voucher: The part of ``held`` granted to its next round and not yet
            taken by a request.
        in_flight: Requests running now.
        per_sample: The ``max_tokens`` cap of each request this round, if set.
        limited: The pool once gave it less than it asked.
        capped: The pool stopped it (not even one sample could be covered).
        active: Still in the batch.
    """

    def __init__(
        self, pool: TokenPool, name: str, order: int, limit: int | None, ask: int, floor: int
    ) -> None:
        self.pool = pool
        self.name = name
        self.order = order
        self.limit = _positive("limit", limit)
        self.certainty = 0.0
        self.ask = ask
        self.floor = floor
        self.started = False
        self.spent = 0
        self.held = 0
        self.voucher = 0
        self.in_flight = 0
        self.per_sample: int | None = None
        self.limited = False
        self.capped = False
        self.active = True

    def open_call(self, max_tokens: int | None, *, sample: bool = True) -> tuple[int | None, int]:
        """Reserve tokens for one request before it is sent.

        The request's ``max_tokens`` is capped at :attr:`per_sample`; it draws on
        the round's grant first, then on what the pool may still give. A request
        that is not a sample of the program (``sample=False``, e.g. a reward
        model's scoring) and has no ``max_tokens`` is sent as is: nothing is
        reserved, and it is charged what it reports.

        Returns:
            ``(cap, reserved)``: the ``max_tokens`` to send and the tokens
            reserved (hand both back to :meth:`close_call`).

        Raises:
            BudgetExhaustedError: The pool cannot cover the request.
        """
        if max_tokens is None and not sample:
            self.in_flight += 1
            self.started = True
            return None, 0
        cap = max_tokens
        if self.per_sample is not None:
            cap = self.per_sample if cap is None else min(cap, self.per_sample)
        room = self.pool.grantable(self)
        self.started = True
        if cap is None:
            if room is None:  # nothing to enforce: no total, no limit, no cap
                self.in_flight += 1
                return None, 0
            cap = self.voucher + room
        from_voucher = min(cap, self.voucher)
        extra = cap - from_voucher
        if cap < 1 or (room is not None and extra > room):
            self.limited = True
            raise BudgetExhaustedError(
                f"the batch's token pool cannot cover a request of {cap} tokens for "
                f"member {self.name} ({self.pool.spent} spent, {self.pool.reserved} reserved "
                f"of {self.pool.total})",
                status_code=429,
            )
        self.voucher -= from_voucher
        self.pool._reserve(self, extra)
        self.in_flight += 1
        return cap, cap

    def close_call(self, reserved: int, used: int) -> None:
        """Settle one request: give back its reservation, charge what it used."""
        self.in_flight -= 1
        self.pool._unreserve(self, reserved)
        self.spent += used
        self.pool.spent += used
        if used > reserved and (self.pool.total is not None or self.limit is not None):
            self.pool.overrun += used - reserved
        self.pool.peak = max(self.pool.peak, self.pool.spent + self.pool.reserved)

    def release_voucher(self, keep: int = 0) -> None:
        """Give back the round's grant beyond ``keep`` tokens."""
        back = max(0, self.voucher - max(0, keep))
        self.voucher -= back
        self.pool._unreserve(self, back)

    def withdraw(self) -> None:
        """Drop the claim on a next round (the program decided to stop)."""
        self.release_voucher()
        self.ask = 0

    def leave(self) -> None:
        """Leave the batch: give back the unused grant, claim nothing more."""
        self.withdraw()
        self.active = False

    def __repr__(self) -> str:
        return (
            f"PoolMember({self.name!r}, certainty={self.certainty:.3g}, spent={self.spent}, "
            f"held={self.held}, ask={self.ask})"
        )


class pool_share(Policy):  # noqa: N801 - lowercase like the other policies
    """Make a program a member of a :class:`TokenPool`; wraps its other policies.

    At the start of each round (no request of the member running) it asks the
    pool for ``n * p`` tokens, where ``n`` is the round the controller would
    start (``first_round`` / ``round_size``, within the inner batch cap) and
    ``p`` the per-sample cap (``sample_tokens``, within the inner budget, which
    also caps the round as a whole). It then caps the round at the ``k = grant
    // p`` samples the grant covers, or stops with ``MAX_TOKENS`` when ``k`` is
    0. Checks within a round pass the inner verdict through (the round's
    requests hold their tokens). The member's requests must go through
    :meth:`PoolMember.open_call` / :meth:`PoolMember.close_call`
    (:class:`dynasor_agents.BatchAllocator` wires both).

    Args:
        member: The program's account.
        inner: The program's other policies (default: none).
        first_round: The controller's first round.
        round_size: The controller's later rounds.
        sample_tokens: Per-sample ``max_tokens`` (``None``: only the inner budget).

    Example:
        >>> from dynasor_agents.controller import CertaintyController, threshold
        >>> pool = TokenPool(1000)
        >>> member = pool.join("q")
        >>> share = pool_share(member, threshold(0.9), first_round=4, sample_tokens=300)
        >>> ctl = CertaintyController(share, first_round=4)
        >>> ctl.decide(ProgramState()).next_batch    # 1000 tokens cover 3 samples of 300
        3
        >>> member.voucher
        900
    """

    def __init__(
        self,
        member: PoolMember,
        inner: Policy | None = None,
        *,
        first_round: int = 5,
        round_size: int = 5,
        sample_tokens: int | None = None,
    ) -> None:
        if not isinstance(member, PoolMember):
            raise InvalidInputError(f"pool_share expects a PoolMember, got {member!r}")
        if inner is not None and not isinstance(inner, Policy):
            raise InvalidInputError(f"inner must be a Policy, got {inner!r}")
        for name, value in (("first_round", first_round), ("round_size", round_size)):
            _positive(name, value)
        self.member = member
        self.inner = inner
        self.first_round = first_round
        self.round_size = round_size
        self.sample_tokens = _positive("sample_tokens", sample_tokens)

    def __call__(self, state: ProgramState) -> Verdict:
        member = self.member
        verdict = self.inner(state) if self.inner is not None else Verdict()
        if state.samples:  # the latest Certaindex is the member's priority, also mid-round
            member.certainty = state.certainty
        member.release_voucher()  # what the last round's requests did not take
        if verdict.stop is not None:
            member.withdraw()
            return verdict
        if member.in_flight:  # a check within a round: its requests hold their tokens
            return verdict
        n = self.first_round if state.samples == 0 else self.round_size
        if verdict.batch_cap is not None:
            n = min(n, verdict.batch_cap)
        per_sample = self.sample_tokens
        if verdict.budget is not None:
            per_sample = verdict.budget if per_sample is None else min(per_sample, verdict.budget)
        if n < 1 or per_sample is None:
            member.per_sample = None
            member.ask = 0
            return verdict
        need = n * per_sample
        if verdict.budget is not None:
            need = min(need, verdict.budget)  # the budget caps the round, not just a sample
        granted = member.pool.grant(member, need, certainty=member.certainty)
        covered = granted // per_sample
        member.release_voucher(keep=covered * per_sample)
        if covered == 0:
            member.capped = True
            member.withdraw()
            return verdict.merge(Verdict(stop=StopReason.MAX_TOKENS, budget=0))
        member.per_sample = per_sample
        return verdict.merge(Verdict(batch_cap=covered))

    def __repr__(self) -> str:
        inner = "" if self.inner is None else f", {self.inner!r}"
        return f"pool_share({self.member.name!r}{inner})"


class budget_curve(Policy):  # noqa: N801
    """Map Certaindex to the completion tokens a program may still spend.

    The curve is piecewise-linear through ``points`` (``(certainty, tokens)``,
    certainties strictly increasing in ``[0, 1]``, tokens ``>= 0``) and flat
    beyond its ends; budgets are rounded to whole tokens. A budget of 0 stops
    the program with ``MAX_TOKENS``, except before its first sample (there is
    no Certaindex yet, and a program needs a sample). In a batch the budget
    caps each round as a whole (see :class:`pool_share`); alone it caps each
    sample, like :class:`~dynasor_agents.controller.max_tokens`.

    Args:
        points: The curve's corners.

    Example:
        >>> curve = budget_curve([(0.0, 2000), (0.5, 1200), (0.9, 0)])
        >>> [curve.budget_at(c) for c in (0.0, 0.25, 0.5, 0.8, 0.9, 1.0)]
        [2000, 1600, 1200, 300, 0, 0]
        >>> curve(ProgramState(samples=5, certainty=0.95)).stop
        <StopReason.MAX_TOKENS: 'max_tokens'>
        >>> budget_curve([(0.5, 100), (0.2, 50)])
        Traceback (most recent call last):
        ...
        dynasor_agents.errors.InvalidInputError: budget_curve: unsorted certainties [0.5, 0.2]
    """

    def __init__(self, points: Sequence[tuple[float, int]]) -> None:
        self._curve = Piecewise(points, "token", name="budget_curve", minimum=0)
        self.points: tuple[tuple[float, float], ...] = self._curve.points

    def budget_at(self, certainty: float) -> int:
        """The budget at ``certainty`` (whole tokens)."""
        return round(self._curve.at(certainty))

    def __call__(self, state: ProgramState) -> Verdict:
        budget = self.budget_at(state.certainty if state.samples else 0.0)
        if budget > 0:
            return Verdict(budget=budget)
        if state.samples == 0:
            return Verdict()
        return Verdict(stop=StopReason.MAX_TOKENS, budget=0)

    def __repr__(self) -> str:
        corners = ", ".join(f"({c:g}, {t:g})" for c, t in self.points)
        return f"budget_curve([{corners}])"
