"""Plans run as containers, through gpustack-runtime (Docker, Podman or Kubernetes).

berth writes no container layer of its own: every operation is one of gpustack-runtime's
``create_workload``, ``get_workload``, ``list_workloads``, ``logs_workload`` and
``delete_workload``, and gpustack-runtime picks the engine from its settings (environment
variables read once, at its first import): ``GPUSTACK_RUNTIME_DEPLOY`` (``auto``, ``docker``,
``podman``, ``kubernetes``), ``GPUSTACK_RUNTIME_DOCKER_HOST``, ``GPUSTACK_RUNTIME_PODMAN_HOST``,
``GPUSTACK_RUNTIME_KUBERNETES_NAMESPACE``, ``GPUSTACK_RUNTIME_DOCKER_PAUSE_IMAGE`` and the rest.
See ``docs/containers.md``.

What this module adds: one state per container with exit codes and reasons (``_status``),
errors that say what to fix (``_errors``), and logs by byte range and by following (``_logs``).
berth's labels, name checks and the rest of the contract come from :mod:`berth.deployers.base`.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Iterator

from gpustack_runtime import deployer as runtime
from gpustack_runtime.deployer import WorkloadPlan
from gpustack_runtime.deployer import WorkloadStatus as RuntimeStatus
from gpustack_runtime.deployer.__types__ import ContainerImagePullPolicyEnum

from berth.deployers.container import _status as status_map
from berth.deployers.container._errors import translate_create_error, translate_error
from berth.deployers.container._logs import (
    LogCache,
    follow_stream,
    last_lines,
    slice_log,
    to_bytes,
)
from berth.deployers.container._volumes import remove_leftover_volumes
from berth.deployers.base import (
    MANAGED_LABEL,
    RUN_CONTAINER,
    Deployer,
    DeployerError,
    WorkloadExists,
    WorkloadNotFound,
)
from berth.schemas.workload import LogChunk, WorkloadState, WorkloadStatus

#: Lines of a failed container's log quoted in the workload's reason.
FAILURE_LOG_LINES = 10


class ContainerDeployer(Deployer):
    """Runs plans as containers via gpustack-runtime.

    ``image_pull_policy`` (``Always``, ``IfNotPresent``, ``Never``), when given, overrides the
    policy of every container; ``None`` keeps gpustack-runtime's (its
    ``GPUSTACK_RUNTIME_DEPLOY_IMAGE_PULL_POLICY``, ``IfNotPresent`` by default). Use ``Never`` on
    hosts that reach no registry, so a missing image fails at once instead of attempting a pull.
    ``namespace`` is passed through (Kubernetes only).
    """

    name = "container"

    def __init__(self, image_pull_policy: str | None = None, namespace: str | None = None) -> None:
        self._pull_policy = _pull_policy(image_pull_policy)
        self._namespace = namespace
        self._create_lock = threading.Lock()
        self._log_cache = LogCache()

    # -- create ----------------------------------------------------------------------------

    def check(self, plan: WorkloadPlan) -> str | None:
        """Every container needs an image; whether the engine has it is known only at ``create``."""
        problem = super().check(plan)
        if problem is not None:
            return problem
        missing = [c.name for c in plan.containers or [] if not c.image]
        if missing:
            return f"container(s) {', '.join(missing)} of plan {plan.name!r} have no image; give each one"
        return None

    def _create(self, plan: WorkloadPlan) -> WorkloadStatus:
        submitted = self._prepare(plan)
        with self._create_lock:
            if self._find(plan.name) is not None:
                raise WorkloadExists(f"workload {plan.name!r} already exists; delete it first (berth stop)")
            self._submit(submitted, plan)
        return self.get(plan.name)

    def _prepare(self, plan: WorkloadPlan) -> WorkloadPlan:
        """A copy of ``plan`` to hand over: gpustack-runtime edits the plans it is given."""
        submitted = copy.deepcopy(plan)
        if self._namespace is not None:
            submitted.namespace = self._namespace
        for container in submitted.containers or []:
            if self._pull_policy is not None:
                container.image_pull_policy = self._pull_policy
        return submitted

    def _submit(self, submitted: WorkloadPlan, plan: WorkloadPlan) -> None:
        try:
            runtime.create_workload(submitted)
        except Exception as exc:  # noqa: BLE001 - every failure is translated below
            self._discard(str(plan.name))
            raise translate_create_error(exc, plan) from exc

    def _discard(self, name: str) -> None:
        """Remove what a failed create left behind (pause container, volumes)."""
        try:
            runtime.delete_workload(name, self._namespace, grace_period_seconds=0)
        except Exception:  # noqa: BLE001 - best effort; the create error is what matters
            pass
        remove_leftover_volumes(name)

    # -- status ----------------------------------------------------------------------------

    def _find(self, name: str) -> RuntimeStatus | None:
        try:
            return runtime.get_workload(name, self._namespace)
        except Exception as exc:  # noqa: BLE001 - translated
            raise translate_error(exc, f"read workload {name!r}") from exc

    def _require(self, name: str) -> RuntimeStatus:
        found = self._find(name)
        if found is None:
            raise WorkloadNotFound(f"no container workload named {name!r} (berth ps lists them)")
        return found

    def get(self, name: str) -> WorkloadStatus:
        found = self._require(name)
        status = status_map.to_status(found, self.name)
        if status.state is WorkloadState.FAILED:
            status = self._with_log_tail(found, status)
        return status

    def _with_log_tail(self, found: RuntimeStatus, status: WorkloadStatus) -> WorkloadStatus:
        """Add the last lines of the failed container's log to the reason."""
        blamed = status_map.failed_container(status.containers)
        container = blamed.name if blamed is not None else RUN_CONTAINER
        try:
            data = self._read(found, container)
        except Exception:  # noqa: BLE001 - the state is known; the log is a courtesy
            return status
        tail = last_lines(data, FAILURE_LOG_LINES)
        if not tail:
            return status
        reason = f"{status.reason}; last log lines of {container!r}:\n{tail}"
        return status.model_copy(update={"reason": reason})

    def _list(self) -> list[WorkloadStatus]:
        try:
            found = runtime.list_workloads(self._namespace, labels={MANAGED_LABEL: "true"})
        except Exception as exc:  # noqa: BLE001 - translated
            raise translate_error(exc, "list workloads") from exc
        return [status_map.to_status(s, self.name) for s in found]

    # -- logs ------------------------------------------------------------------------------

    def _logs(self, name: str, container: str, start: int, end: int | None) -> LogChunk:
        """Cost: the engine has no byte offsets, so each call transfers the whole log, O(size);
        the log of a container that has exited is cached and cut from memory afterwards."""
        return slice_log(self._read(self._require(name), container), start, end)

    def _read(self, found: RuntimeStatus, container: str) -> bytes:
        token = self._token(found, container)
        cached = self._log_cache.get(token)
        if cached is not None:
            return cached
        try:
            data = to_bytes(runtime.logs_workload(found.name, self._namespace, token=token))
        except Exception as exc:  # noqa: BLE001 - translated
            raise translate_error(exc, f"read the log of {container!r} in {found.name!r}") from exc
        if status_map.has_exited(found, container):
            self._log_cache.put(token, data)
        return data

    def _token(self, found: RuntimeStatus, container: str) -> str:
        token = status_map.token_of(found, container)
        if token is None:
            known = ", ".join(status_map.container_names(found)) or "none"
            raise WorkloadNotFound(
                f"workload {found.name!r} has no container {container!r}; its containers: {known}"
            )
        return token

    def _follow(
        self, name: str, container: str, start: int, poll: float, stop: threading.Event | None
    ) -> Iterator[bytes]:
        """The engine's own log stream from byte ``start``; ends when the container does."""
        found = self._require(name)
        token = self._token(found, container)

        def open_stream() -> object:
            try:
                return runtime.logs_workload(name, self._namespace, token=token, follow=True)
            except Exception as exc:  # noqa: BLE001 - translated
                raise translate_error(exc, f"follow the log of {container!r} in {name!r}") from exc

        return follow_stream(open_stream, start=start, poll=poll, stop=stop)  # type: ignore[arg-type]

    # -- delete ----------------------------------------------------------------------------

    def _delete(self, name: str, timeout: float) -> WorkloadStatus | None:
        """SIGTERM every container, SIGKILL after ``timeout`` s, remove containers and volumes."""
        grace = max(0, math.ceil(timeout))
        try:
            found = runtime.delete_workload(name, self._namespace, grace_period_seconds=grace)
        except Exception as exc:  # noqa: BLE001 - translated
            raise translate_error(exc, f"delete workload {name!r}") from exc
        return None if found is None else status_map.to_status(found, self.name)


def _pull_policy(value: str | None) -> ContainerImagePullPolicyEnum | None:
    if value is None:
        return None
    by_name = {p.value.lower(): p for p in ContainerImagePullPolicyEnum}
    try:
        return by_name[value.lower()]
    except KeyError:
        choices = ", ".join(p.value for p in ContainerImagePullPolicyEnum)
        raise DeployerError(f"image_pull_policy {value!r} is not one of: {choices}") from None


__all__ = ["FAILURE_LOG_LINES", "ContainerDeployer"]
