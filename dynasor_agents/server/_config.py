"""Settings of the server component, passed from the launcher through the environment.

vLLM constructs ``--middleware`` classes with the ASGI app only, so
``dynasor-agents serve`` hands our own flags to the component in ``DYNASOR_*``
environment variables. :meth:`ServerConfig.from_env` reads them back (with a
clear error naming a bad variable); :meth:`ServerConfig.to_env` writes them.

Example:
    >>> config = ServerConfig(scheduling="gang", program_ttl=30)
    >>> config.to_env()["DYNASOR_SCHEDULING"]
    'gang'
    >>> ServerConfig.from_env(config.to_env()) == config
    True
    >>> ServerConfig.from_env({"DYNASOR_PROGRAM_TTL": "soon"})
    Traceback (most recent call last):
    ...
    ValueError: invalid DYNASOR_PROGRAM_TTL='soon': Input should be a valid number, ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["ENV_PREFIX", "SCHEDULING_POLICIES", "LatePrograms", "SchedulingName", "ServerConfig"]

ENV_PREFIX: Final = "DYNASOR_"
SchedulingName = Literal["fcfs", "gang", "dynasor", "las", "edf"]
SCHEDULING_POLICIES: Final[tuple[SchedulingName, ...]] = ("fcfs", "gang", "dynasor", "las", "edf")
LatePrograms = Literal["stop", "keep"]


class ServerConfig(BaseModel):
    """What the server component does; one field per ``dynasor-agents serve`` flag.

    Attributes:
        scheduling: Program-level scheduling policy: ``fcfs`` (vLLM's own order),
            ``gang`` (a program's requests together, earlier programs first) or
            ``dynasor`` (gang + approximate shortest-remaining-first + aging),
            ``las`` (least attained service: programs that have generated the
            fewest tokens first, as Autellix) or ``edf`` (earliest deadline
            hint first).
        program_ttl: Seconds a program may stay idle (nothing in flight) before
            its entry expires and is freed.
        max_programs: Most programs the table holds; more get ``too_many_programs``.
        default_budget: Completion tokens a program may spend when its client
            sends no budget (``None``: unlimited).
        aging: Tokens of estimated remaining work forgiven per second a program
            has existed, so long programs are not starved by short ones
            (``dynasor`` only).
        request_tokens: Tokens a request is assumed to generate before the
            program has a finished request to average over, when the request
            sets no ``max_tokens``.
        late_programs: ``stop`` a program once its deadline hint has passed
            (its requests are aborted and refused with ``deadline_exceeded``;
            the client answers with what it has), or ``keep`` running it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheduling: SchedulingName = "dynasor"
    program_ttl: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    max_programs: int = Field(default=10_000, ge=1)
    default_budget: int | None = Field(default=None, ge=1)
    aging: float = Field(default=100.0, ge=0, allow_inf_nan=False)
    request_tokens: int = Field(default=256, ge=1)
    late_programs: LatePrograms = "stop"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ServerConfig:
        """Read ``DYNASOR_<FIELD>`` variables; unset ones keep their defaults.

        Raises:
            ValueError: A variable holds an invalid value (the message names it).
        """
        raw: dict[str, str] = {}
        for name in cls.model_fields:
            value = environ.get(ENV_PREFIX + name.upper())
            if value is not None and value.strip():
                raw[name] = value.strip()
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else "?"
            var = ENV_PREFIX + field.upper()
            raise ValueError(f"invalid {var}={raw.get(field)!r}: {err['msg']}") from None

    def to_env(self) -> dict[str, str]:
        """The ``DYNASOR_*`` variables that reproduce this config (unset: omitted)."""
        out: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is not None:
                out[ENV_PREFIX + name.upper()] = str(value)
        return out
