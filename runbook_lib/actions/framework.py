"""The action model every remediation goes through.

An action has typed inputs (a pydantic model), and:

* ``plan()``: exactly what will run, rendered as strings, without a connection;
* ``capture(targets)``: the prior state it will restore on rollback;
* ``apply(targets)``: idempotent; a second apply changes nothing and says ``already applied``;
* ``verify(targets)``: measures on the server whether the intended effect is there;
* ``rollback(targets, prior)``: restores the captured prior state exactly.

Actions are rebuilt from audit records through the static registry (``registry.build_action(kind,
inputs)``), so a rollback never depends on the notebook that made them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from runbook_lib.actions.action_errors import ActionInputError
from runbook_lib.model import slug  # noqa: F401 - the executors build their ids with it

if TYPE_CHECKING:
    from runbook_lib.actions.targets import Targets

RISKS = ("low", "medium", "high")


class Inputs(BaseModel):
    """Base for an action's typed inputs: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Plan:
    """One row of the plan table: what will run, what is captured first, how it is undone."""

    action_id: str
    kind: str
    title: str
    target: str
    commands: list[str]
    captures: list[str]
    rollback_commands: list[str]
    reversible: bool
    risk: str

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ApplyResult:
    changed: bool
    message: str
    commands: list[str] = field(default_factory=list)  # what was actually sent to the server


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    message: str
    observed: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RollbackResult:
    changed: bool
    message: str
    commands: list[str] = field(default_factory=list)


class Action(ABC):
    """Base class. Subclasses set ``kind``, ``family``, ``Inputs`` and ``effect_signal``."""

    kind: ClassVar[str]
    family: ClassVar[str]  # which connection it needs: "postgres" | "redis"
    Inputs: ClassVar[type[Inputs]]
    effect_signal: ClassVar[str]  # the catalog signal the verify loop re-measures
    also_measure: ClassVar[tuple[str, ...]] = ()  # signals read beside it over the same windows (context only)
    risk: ClassVar[str] = "medium"
    reversible: ClassVar[bool] = True

    def __init__(self, inputs: Inputs | dict[str, Any] | None = None, **kwargs: Any):
        data = inputs if inputs is not None else kwargs
        if isinstance(data, self.Inputs):
            self.inputs = data
        else:
            try:
                self.inputs = self.Inputs.model_validate(data)
            except ValidationError as e:
                first = e.errors()[0]
                loc = ".".join(str(x) for x in first["loc"]) or "(inputs)"
                raise ActionInputError(f"{self.kind}: {loc}: {first['msg'].removeprefix('Value error, ')}") from None

    # --- identity ---------------------------------------------------------------------------

    @property
    @abstractmethod
    def id(self) -> str:
        """Stable and deterministic from kind + inputs."""

    @property
    @abstractmethod
    def title(self) -> str: ...

    @property
    @abstractmethod
    def target(self) -> str:
        """Human-readable, never containing a secret."""

    def to_record(self) -> dict[str, Any]:
        return {"action_id": self.id, "kind": self.kind, "inputs": self.inputs.model_dump(mode="json")}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id}>"

    # --- behaviour --------------------------------------------------------------------------

    @abstractmethod
    def plan(self) -> Plan: ...

    @abstractmethod
    def rollback_commands(self, prior: dict[str, Any]) -> list[str]:
        """The exact commands ``rollback(targets, prior)`` would send (empty: nothing to undo)."""

    @abstractmethod
    def capture(self, targets: Targets) -> dict[str, Any]: ...

    @abstractmethod
    def is_applied(self, state: dict[str, Any]) -> bool:
        """Whether a captured state shows the intended change (state discovery after a crash)."""

    @abstractmethod
    def apply(self, targets: Targets) -> ApplyResult: ...

    @abstractmethod
    def verify(self, targets: Targets) -> VerifyResult: ...

    @abstractmethod
    def rollback(self, targets: Targets, prior: dict[str, Any]) -> RollbackResult: ...
