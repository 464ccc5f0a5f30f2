"""Controller specs: a :class:`CertaintyController` as plain, JSON-ready data.

Replay sweeps controllers and calibration saves the chosen one to a file that a
strategy loads later, so a controller needs a description that can be written,
read and rebuilt. A :class:`ControllerSpec` names its policy terms (composed
with ``|``, in order), the keyword arguments of each, and the round sizes::

    {"policy": "threshold | max_samples",
     "params": {"threshold": {"value": 0.8}, "max_samples": {"n": 16}},
     "first_round": 5, "round_size": 11}

Example:
    >>> terms = [("threshold", {"value": 0.8}), ("max_samples", {"n": 16})]
    >>> spec = ControllerSpec.of(terms, first_round=5, round_size=11)
    >>> spec.to_json()["policy"]
    'threshold | max_samples'
    >>> ctl = ControllerSpec.from_json(spec.to_json()).build()
    >>> ctl.policy, ctl.first_round, ctl.round_size
    (threshold(0.8) | max_samples(16), 5, 11)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dynasor_agents._stopping import (
    adaptive_consistency,
    early_stopping,
    hopeless,
    weighted_consensus,
)
from dynasor_agents.controller import (
    CertaintyController,
    Policy,
    any_of,
    max_samples,
    max_tokens,
    threshold,
)
from dynasor_agents.errors import InvalidInputError

__all__ = ["POLICY_NAMES", "ControllerSpec", "make_policy"]

Param = float | int
Terms = tuple[tuple[str, tuple[tuple[str, Param], ...]], ...]


def _factories() -> dict[str, Callable[..., Policy]]:
    return {
        "threshold": threshold,
        "max_samples": max_samples,
        "max_tokens": max_tokens,
        "adaptive_consistency": adaptive_consistency,
        "early_stopping": early_stopping,
        "hopeless": hopeless,
        "weighted_consensus": weighted_consensus,
    }


POLICY_NAMES = tuple(sorted(_factories()))
"""The policy names a spec may use."""


def make_policy(name: str, params: Mapping[str, Param]) -> Policy:
    """Build one policy term from its name and keyword arguments.

    Raises:
        InvalidInputError: Unknown name, or arguments the policy rejects.

    Example:
        >>> make_policy("hopeless", {"below": 0.2, "after": 8})
        hopeless(0.2, after=8)
        >>> make_policy("nope", {})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        dynasor_agents.errors.InvalidInputError: unknown policy 'nope'; known: ...
    """
    factory = _factories().get(name)
    if factory is None:
        raise InvalidInputError(f"unknown policy {name!r}; known: {', '.join(POLICY_NAMES)}")
    try:
        return factory(**dict(params))
    except TypeError as exc:
        raise InvalidInputError(f"bad parameters for policy {name!r}: {exc}") from exc


def _param(name: str, key: str, value: Any) -> Param:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"parameter {name}.{key} must be a number, got {value!r}")
    return value


@dataclass(frozen=True)
class ControllerSpec:
    """A controller as data: policy terms (``|``-composed, in order) and round sizes.

    Attributes:
        terms: ``(policy name, ((keyword, value), ...))`` per term.
        first_round: Samples in the first round.
        round_size: Samples in each later round.
    """

    terms: Terms
    first_round: int = 5
    round_size: int = 5

    @classmethod
    def of(
        cls,
        terms: Iterable[tuple[str, Mapping[str, Param]]],
        *,
        first_round: int = 5,
        round_size: int = 5,
    ) -> ControllerSpec:
        """A spec from ``(name, {keyword: value})`` pairs."""
        frozen = tuple((name, tuple(sorted(params.items()))) for name, params in terms)
        return cls(frozen, first_round, round_size)

    @property
    def policy_name(self) -> str:
        """The terms' names joined by ``" | "``."""
        return " | ".join(name for name, _ in self.terms)

    def build(self) -> CertaintyController:
        """The controller this spec describes.

        Raises:
            InvalidInputError: A term is unknown or badly parametrized, the spec
                has no terms, or a round size is not an int ``>= 1``.
        """
        if not self.terms:
            raise InvalidInputError("a controller spec needs at least one policy term")
        policies = [make_policy(name, dict(params)) for name, params in self.terms]
        policy = policies[0] if len(policies) == 1 else any_of(*policies)
        return CertaintyController(policy, first_round=self.first_round, round_size=self.round_size)

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready form (see the module docstring)."""
        return {
            "policy": self.policy_name,
            "params": {name: dict(params) for name, params in self.terms},
            "first_round": self.first_round,
            "round_size": self.round_size,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ControllerSpec:
        """Read :meth:`to_json`'s form back (the spec is validated by building it).

        Raises:
            InvalidInputError: A field is missing or malformed.
        """
        policy = data.get("policy")
        params = data.get("params", {})
        if not isinstance(policy, str) or not policy.strip():
            raise InvalidInputError(f"'policy' must be a non-empty string, got {policy!r}")
        if not isinstance(params, Mapping):
            raise InvalidInputError(f"'params' must be an object, got {params!r}")
        names = [name.strip() for name in policy.split("|")]
        if len(set(names)) != len(names):
            raise InvalidInputError(f"policy {policy!r} names a term twice")
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise InvalidInputError(f"params for {unknown} but policy is {policy!r}")
        terms: list[tuple[str, dict[str, Param]]] = []
        for name in names:
            own = params.get(name, {})
            if not isinstance(own, Mapping):
                raise InvalidInputError(f"params.{name} must be an object, got {own!r}")
            terms.append((name, {str(k): _param(name, str(k), v) for k, v in own.items()}))
        rounds = {key: data.get(key, 5) for key in ("first_round", "round_size")}
        for key, value in rounds.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{key!r} must be an int >= 1, got {value!r}")
        spec = cls.of(terms, first_round=rounds["first_round"], round_size=rounds["round_size"])
        spec.build()
        return spec
