"""Planning a recorded instance and handing its workload to the deployer, errors translated.

The plan comes from the backend (``plan_spec(spec)``);
the worker only adds its owner label, so a restarted worker can tell its own workloads from
others'. Deployer errors become worker errors with the right HTTP status.
"""

from __future__ import annotations

import errno
import logging

from pydantic import ValidationError

from berth.backends import PlanError, ServePlan, plan_spec
from berth.deployers.base import (
    DeployerError,
    DeployerUnavailable,
    InvalidWorkload,
    WorkloadExists,
)
from berth.schemas import DeploymentSpec
from berth.schemas.errors import validation_messages
from berth.schemas.workload import WorkloadStatus
from berth.worker.errors import (
    DeployerDown,
    DeployFailed,
    InstanceConflict,
    InvalidRequest,
    WorkerError,
)
from berth.worker.reconcile._context import WorkerContext
from berth.worker.reconcile._lifecycle import OWNER_LABEL
from berth.worker.reconcile._ray_join import join_plan
from berth.worker.store import Endpoints

logger = logging.getLogger(__name__)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def plan_instance(spec: DeploymentSpec, owner: str) -> ServePlan:
    """The instance's plan with this worker's owner label; :class:`InvalidRequest` if it cannot be planned."""
    try:
        plan = plan_spec(spec)
    except PlanError as exc:
        raise InvalidRequest(str(exc)) from None
    except ValidationError as exc:
        raise InvalidRequest("; ".join(validation_messages(exc))) from None
    except ValueError as exc:  # the workload types refuse a value the planner passed through
        raise InvalidRequest(f"spec cannot be planned: {exc}") from None
    plan.workload.labels = {**(plan.workload.labels or {}), OWNER_LABEL: owner}
    return plan


def plan_endpoints(plan: ServePlan, spec: DeploymentSpec) -> Endpoints:
    """Where the planned instance answers, and, for a Ray leader, who must join its head first."""
    return Endpoints(base_url=plan.base_url, readiness_url=plan.readiness_url,
                     served_names=tuple(plan.served_names), ray_join=join_plan(plan, spec))


def _translate(exc: Exception, deployer: str) -> WorkerError:
    if isinstance(exc, InvalidWorkload):
        return InvalidRequest(f"the {deployer} deployer refused the instance: {exc}")
    if isinstance(exc, WorkloadExists):
        return InstanceConflict(f"the {deployer} deployer already runs a workload of that name: {exc}")
    if isinstance(exc, DeployerUnavailable):
        return DeployerDown(f"the {deployer} deployer is unavailable: {exc}")
    if isinstance(exc, DeployerError):
        return DeployFailed(f"the {deployer} deployer failed to create the instance: {exc}")
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        return DeployerDown(f"the {deployer} deployer cannot write its files: {exc.strerror}; "
                            "free space under the worker's data_dir and retry")
    logger.error("unexpected error from the %s deployer", deployer, exc_info=exc)
    return DeployFailed(f"the {deployer} deployer failed: {type(exc).__name__}: {exc}")


def create_workload(ctx: WorkerContext, plan: ServePlan) -> WorkloadStatus:
    """Submit ``plan``'s workload; deployer errors come back as worker errors."""
    try:
        return ctx.deployer.create(plan.workload)
    except Exception as exc:
        raise _translate(exc, ctx.deployer.name) from exc
