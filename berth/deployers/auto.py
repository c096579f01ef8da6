"""``auto``: each plan on the first deployer that can run it.

Built over an ordered list of deployers (the worker's is the launcher, then the process
deployer): ``create`` asks each one's :meth:`~berth.deployers.base.Deployer.check` in turn and
hands the plan to the first that accepts it, so a ``vllm serve`` instance starts in seconds on
the launcher while a Ray leader (with its ``ray-head`` sidecar), a Ray or ``--headless``
follower, or a data-parallel instance runs on the process deployer. Calls by name go to the
member that knows the workload; every status names that member in ``deployer``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from gpustack_runtime.deployer import WorkloadPlan

from berth.deployers.base import Deployer, DeployerError, WorkloadNotFound
from berth.schemas.workload import LogChunk, WorkloadStatus

__all__ = ["AutoDeployer"]


class AutoDeployer(Deployer):
    """Chooses among ``members`` (in order of preference) per plan."""

    name = "auto"

    def __init__(self, members: Sequence[Deployer]) -> None:
        if not members:
            raise DeployerError("auto needs at least one deployer to choose from")
        self.members = list(members)

    @property
    def member_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)

    def choose(self, plan: WorkloadPlan) -> Deployer | None:
        """The first member that can run ``plan``, or ``None``."""
        return next((m for m in self.members if m.check(plan) is None), None)

    def check(self, plan: WorkloadPlan) -> str | None:
        reasons = []
        for member in self.members:
            reason = member.check(plan)
            if reason is None:
                return None
            reasons.append(f"{member.name}: {reason}")
        return "no deployer here can run the plan (" + "; ".join(reasons) + ")"

    def serves(self, deployer: str) -> bool:
        return deployer == self.name or any(m.serves(deployer) for m in self.members)

    def _create(self, plan: WorkloadPlan) -> WorkloadStatus:
        chosen = self.choose(plan)
        assert chosen is not None  # create() checked the plan first
        return chosen.create(plan)

    def _owner(self, name: str) -> Deployer:
        for member in self.members:
            try:
                member.get(name)
            except WorkloadNotFound:
                continue
            return member
        raise WorkloadNotFound(f"no workload named {name!r} on {', '.join(self.member_names)}")

    def get(self, name: str) -> WorkloadStatus:
        return self._owner(name).get(name)

    def _list(self) -> Iterator[WorkloadStatus]:
        for member in self.members:
            yield from member.list()

    def _logs(self, name: str, container: str, start: int, end: int | None) -> LogChunk:
        return self._owner(name).logs(name, container=container, start=start, end=end)

    def _delete(self, name: str, timeout: float) -> WorkloadStatus | None:
        for member in self.members:
            last = member.delete(name, timeout=timeout)
            if last is not None:
                return last
        return None

    def adopt(self, name: str, identity: dict[str, str]) -> WorkloadStatus:
        for member in self.members:
            try:
                return member.adopt(name, identity)
            except WorkloadNotFound:
                continue
        raise WorkloadNotFound(f"no workload named {name!r} on {', '.join(self.member_names)}")

    def _follow(
        self, name: str, container: str, start: int, poll: float, stop: threading.Event | None
    ) -> Iterator[bytes]:
        return self._owner(name).follow(name, container=container, start=start, poll=poll, stop=stop)

    def close(self) -> None:
        for member in self.members:
            member.close()

    def shutdown(self, timeout: float = 10.0) -> bool:
        stopped = [member.shutdown(timeout) for member in self.members]
        return any(stopped)
