"""gpustack-runtime's errors turned into berth's, and the checks berth makes before submitting.

gpustack-runtime reports most failures as ``OperationError`` (or, in its default asynchronous mode,
as an ``OperationError`` whose cause is the real error), with the engine's own words inside. The
functions here walk the cause chain and name the thing a person must fix: the engine address, the
missing image, the over-long name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from gpustack_runtime import envs as runtime_envs
from gpustack_runtime.deployer import OperationError, UnsupportedError, WorkloadPlan

from berth.deployers.base import (
    DeployerError,
    DeployerUnavailable,
    InvalidWorkload,
    WorkloadExists,
)

_MISSING_IMAGE = re.compile(r"no such image|not found|pull access denied|manifest unknown|"
                            r"repository does not exist|failed to pull image", re.IGNORECASE)
_ENGINE_DOWN = re.compile(r"connection (refused|aborted|reset)|failed to establish a new connection|"
                          r"cannot connect to the docker daemon", re.IGNORECASE)
_NO_EXECUTABLE = re.compile(r"executable file not found|exec: \S+: no such file", re.IGNORECASE)


def engine_address(engine: str | None = None) -> str:
    """Where gpustack-runtime looks for the engine it is set to use, e.g. ``unix:///var/run/docker.sock``."""
    chosen = (engine or runtime_envs.GPUSTACK_RUNTIME_DEPLOY or "auto").lower()
    if chosen == "kubernetes":
        return "the Kubernetes API (in-cluster, or the current kubeconfig context)"
    if chosen == "podman":
        host = runtime_envs.GPUSTACK_RUNTIME_PODMAN_HOST
    else:
        host = runtime_envs.GPUSTACK_RUNTIME_DOCKER_HOST
    return str(host or "").removeprefix("http+")


def unavailable_message(engine: str | None = None) -> str:
    """The message of :class:`DeployerUnavailable` when no engine answers."""
    chosen = (engine or runtime_envs.GPUSTACK_RUNTIME_DEPLOY or "auto").lower()
    what = {"podman": "Podman", "kubernetes": "Kubernetes"}.get(chosen, "Docker")
    message = (f"no container engine reachable at {engine_address(chosen)}; "
               f"start {what} or choose --deployer process")
    if chosen == "auto":
        message += (" (GPUSTACK_RUNTIME_DEPLOY=auto also tried Kubernetes and Podman at "
                    f"{engine_address('podman')}; set GPUSTACK_RUNTIME_DOCKER_HOST to use another socket)")
    return message


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it was raised from or during, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _engine_down(exc: BaseException) -> bool:
    # requests' ConnectionError is not the builtin one; match both by name.
    named = any(type(e).__name__ == "ConnectionError" for e in causes(exc))
    return named or any(isinstance(e, ConnectionError) for e in causes(exc)) or bool(
        _ENGINE_DOWN.search(_text(exc))
    )


def _text(exc: BaseException) -> str:
    return " | ".join(str(e) for e in causes(exc) if str(e))


def _summary(exc: BaseException) -> str:
    """The most telling message of the chain: the first that is not a generic wrapper's."""
    messages = [str(e) for e in causes(exc) if str(e)]
    telling = [m for m in messages if not m.startswith("Asynchronous workload")]
    return (telling or messages or [type(exc).__name__])[0]


def pause_image() -> str:
    """The pause image gpustack-runtime's Docker/Podman deployers start first in every workload."""
    return str(runtime_envs.GPUSTACK_RUNTIME_DOCKER_PAUSE_IMAGE or "")


def _images(plan: WorkloadPlan) -> list[str]:
    return [c.image for c in plan.containers or [] if c.image] + [pause_image()]


def _image_hint(image: str) -> str:
    if image == pause_image():
        return (f"gpustack-runtime's pause image {image!r} is not available to the container engine; "
                f"load or build it locally (scripts/setup_docker.sh builds one), or point "
                f"GPUSTACK_RUNTIME_DOCKER_PAUSE_IMAGE at a local image before berth starts")
    return (f"image {image!r} is not available to the container engine: it is not present locally "
            f"and could not be pulled; build or load it (docker image ls {image}) or fix the plan's image")


def _missing_image(exc: BaseException, plan: WorkloadPlan) -> InvalidWorkload | None:
    text = _text(exc)
    named = next((image for image in _images(plan) if image and image in text), None)
    not_found = any(type(e).__name__ == "ImageNotFound" for e in causes(exc))
    if named is None or not (not_found or _MISSING_IMAGE.search(text)):
        return None
    return InvalidWorkload(f"{_image_hint(named)} (engine said: {_summary(exc)})")


def translate_create_error(exc: BaseException, plan: WorkloadPlan) -> DeployerError:
    """The berth error for a failed ``create_workload`` of ``plan``."""
    if isinstance(exc, DeployerError):
        return exc
    if any(isinstance(e, UnsupportedError) for e in causes(exc)):
        return DeployerUnavailable(unavailable_message())
    missing = _missing_image(exc, plan)
    if missing is not None:
        return missing
    if _NO_EXECUTABLE.search(_text(exc)):
        return InvalidWorkload(
            f"a command of workload {plan.name!r} is not in its image; fix the plan's "
            f"execution.command or use an image that has it (engine said: {_summary(exc)})"
        )
    if any(isinstance(e, ValueError | TypeError) for e in causes(exc)):
        return InvalidWorkload(f"gpustack-runtime rejected workload {plan.name!r}: {_summary(exc)}")
    if "already in use" in _text(exc) or "Conflict" in _text(exc):
        return WorkloadExists(f"workload {plan.name!r} already exists in the container engine: {_summary(exc)}")
    return translate_error(exc, f"create workload {plan.name!r}")


def translate_error(exc: BaseException, action: str) -> DeployerError:
    """The berth error for any other failed gpustack-runtime call (``action`` says which)."""
    if isinstance(exc, DeployerError):
        return exc
    if any(isinstance(e, UnsupportedError) for e in causes(exc)):
        return DeployerUnavailable(unavailable_message())
    if _engine_down(exc):
        return DeployerUnavailable(f"{unavailable_message()} (while trying to {action}: {_summary(exc)})")
    if isinstance(exc, OperationError):
        return DeployerError(f"the container engine could not {action}: {_summary(exc)}")
    return DeployerError(f"could not {action}: {type(exc).__name__}: {_summary(exc)}")
