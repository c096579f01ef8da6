"""Prometheus metrics of one worker: instances by state, restarts, start-to-ready latency, API requests.

Each worker keeps its own collector registry (several workers can live in one test process);
``/metrics`` renders it in the text exposition format.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from berth.worker.store import InstanceState

__all__ = ["CONTENT_TYPE", "WorkerMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
_READY_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)


class _InstanceStates(Collector):
    """``berth_instances{state=...}``, counted from the registry at each scrape."""

    def __init__(self, states: Callable[[], Iterable[InstanceState]]) -> None:
        self._states = states

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("berth_instances", "Instances on this worker by state.", labels=["state"])
        tally = Tally(state.value for state in self._states())
        for state in InstanceState:
            family.add_metric([state.value], tally.get(state.value, 0))
        yield family


class WorkerMetrics:
    """The worker's metrics. :meth:`track_instances` wires the state gauge to the manager."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.restarts = Counter(
            "berth_instance_restarts", "Restarts of failed instances.", registry=self.registry
        )
        self.start_to_ready = Histogram(
            "berth_instance_start_to_ready_seconds",
            "Seconds from creating an instance's workload to its first passed readiness check.",
            buckets=_READY_BUCKETS,
            registry=self.registry,
        )
        self.orphans = Counter(
            "berth_orphan_workloads_stopped", "Workloads with this worker's label and no registry entry, stopped.",
            registry=self.registry,
        )
        self.requests = Counter(
            "berth_api_requests", "API requests by route template, method and status code.",
            ["route", "method", "status"], registry=self.registry,
        )

    def track_instances(self, states: Callable[[], Iterable[InstanceState]]) -> None:
        self.registry.register(_InstanceStates(states))

    def render(self) -> bytes:
        return generate_latest(self.registry)
