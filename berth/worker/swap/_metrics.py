"""Prometheus metrics of model swapping, on the worker's own collector registry.

* ``berth_model_actuation_seconds{path}``: from a request for a model to its engine answering,
  by path: ``running`` (nothing to do), ``woken`` (from sleep), ``forked`` (started by the
  launcher's fork of a preloaded vLLM) or ``cold`` (started from nothing).
* ``berth_model_activations_total{path}``: the same, counted.
* ``berth_model_hits_total``: requests routed to a registered model whose engine was serving.
* ``berth_model_evictions_total{action,reason}``: engines put to sleep or parked by the policy
  (``reason`` idle or budget).
* ``berth_models{state}``: registered models by state, at each scrape.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PATHS = ("running", "woken", "forked", "cold")
MODEL_STATES = ("parked", "starting", "running", "asleep", "failed", "stopping")
_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600)


class _ModelStates(Collector):
    def __init__(self, source: Callable[[], Iterable[str]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("berth_models", "Registered models by state.", labels=["state"])
        tally = Tally(self.source())
        for state in MODEL_STATES:
            family.add_metric([state], tally.get(state, 0))
        yield family


_BY_REGISTRY: WeakKeyDictionary[CollectorRegistry, SwapMetrics] = WeakKeyDictionary()


class SwapMetrics:
    """The swap metrics, registered on ``registry`` (the worker's). Use :meth:`of`: one set per
    registry, however many controllers (apps) are built over one worker."""

    @classmethod
    def of(cls, registry: CollectorRegistry, states: Callable[[], Iterable[str]]) -> SwapMetrics:
        metrics = _BY_REGISTRY.get(registry)
        if metrics is None:
            metrics = _BY_REGISTRY[registry] = cls(registry, states)
        metrics.states.source = states
        return metrics

    def __init__(self, registry: CollectorRegistry, states: Callable[[], Iterable[str]]) -> None:
        self.actuation = Histogram(
            "berth_model_actuation_seconds",
            "Seconds from a request for a model to its engine answering, by path "
            "(running, woken, forked, cold).",
            ["path"], buckets=_BUCKETS, registry=registry,
        )
        self.activations = Counter(
            "berth_model_activations", "Requests for a model that had to be made ready, by path.",
            ["path"], registry=registry,
        )
        self.hits = Counter(
            "berth_model_hits", "Requests routed to a registered model whose engine was serving.", registry=registry
        )
        self.evictions = Counter(
            "berth_model_evictions", "Engines put to sleep or parked by the policy, by action and reason.",
            ["action", "reason"], registry=registry,
        )
        self.states = _ModelStates(states)
        registry.register(self.states)

    def activated(self, path: str, seconds: float) -> None:
        self.activations.labels(path=path).inc()
        self.actuation.labels(path=path).observe(seconds)
