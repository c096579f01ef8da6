"""How vLLM's own multi-node mode (``--distributed-executor-backend mp``) lays an instance out.

Three shapes, decided by ``workers_per_dp = tp * pp * pcp`` against the smallest node:

- ``dp_only``: every data-parallel rank fits in one node; each node runs ``dpl`` ranks of its
  own (nodes may differ), followers start at the sum of the ranks before them;
- ``mp_only``: one rank spans every node (cross-node tp/pp); ``--nnodes``/``--node-rank``;
- ``nested``: several ranks, each spanning ``nnodes_within_dp`` nodes: both sets of options.

Values the user gave (tp, pp, dp, dpl, pcp) are constraints; the rest is derived. A layout that
cannot work is refused with the reason, before anything starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from math import gcd
from typing import Literal

from berth.backends.plan import PlanError
from berth.utils.args import find_int_parameter

__all__ = ["MultinodeTopology", "UserParallelism", "multinode_topology"]

Shape = Literal["dp_only", "mp_only", "nested"]


@dataclass(frozen=True, slots=True)
class UserParallelism:
    """Parallelism the user fixed in backend_parameters (None: berth derives it)."""

    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
    dpl: int | None = None
    pcp: int | None = None

    @classmethod
    def from_parameters(cls, parameters: list[str] | None) -> UserParallelism:
        def read(*names: str) -> int | None:
            return find_int_parameter(parameters, list(names))

        return cls(
            tp=read("tensor-parallel-size", "tp"),
            pp=read("pipeline-parallel-size", "pp"),
            dp=read("data-parallel-size", "dp"),
            dpl=read("data-parallel-size-local", "dpl"),
            pcp=read("prefill-context-parallel-size", "pcp"),
        )


@dataclass(frozen=True, slots=True)
class MultinodeTopology:
    """The cluster's layout seen from one node (``node_rank`` 0 is the leader)."""

    shape: Shape
    tp: int
    pp: int
    dp: int
    dpl: int
    nnodes: int
    node_rank: int
    start_rank: int

    @property
    def follower(self) -> bool:
        return self.node_rank > 0


@dataclass(frozen=True, slots=True)
class _Layout:
    shape: Shape
    tp: int
    pp: int
    dp: int
    dpl_per_node: list[int]
    nodes_per_rank: int


def _fail(reason: str) -> PlanError:
    return PlanError(f"model.backend_parameters: vLLM multi-node (mp): {reason}")


def _check_positive(user: UserParallelism) -> None:
    for name, value in (
        ("pipeline-parallel-size", user.pp),
        ("prefill-context-parallel-size", user.pcp),
        ("data-parallel-size", user.dp),
        ("data-parallel-size-local", user.dpl),
    ):
        if value is not None and value <= 0:
            raise _fail(f"--{name} {value} must be positive")


def _tensor_parallel(gpus: list[int], user: UserParallelism, pp: int, pcp: int) -> int:
    """The user's tp; else the one their dp implies (tp*pp*pcp*dp = all GPUs); else the gcd of
    the nodes' GPU counts."""
    if user.tp is not None:
        tp = user.tp
    elif user.dp is not None:
        total, per_rank = sum(gpus), user.dp * pp * pcp
        if per_rank == 0 or total % per_rank:
            raise _fail(
                f"cannot derive --tensor-parallel-size: {total} GPUs are not a multiple of "
                f"--data-parallel-size {user.dp} x --pipeline-parallel-size {pp} x "
                f"--prefill-context-parallel-size {pcp}"
            )
        tp = total // per_rank
    else:
        tp = reduce(gcd, gpus)
    if tp <= 0:
        raise _fail(f"--tensor-parallel-size {tp} must be positive")
    return tp


def _dp_only(gpus: list[int], user: UserParallelism, tp: int, pp: int) -> _Layout:
    per_rank = tp * pp * (user.pcp or 1)
    dpl = [count // per_rank for count in gpus]
    if user.dp is not None and user.dp != sum(dpl):
        raise _fail(f"--data-parallel-size {user.dp} does not match the {sum(dpl)} ranks the nodes hold {dpl}")
    if user.dpl is not None and any(d != user.dpl for d in dpl):
        raise _fail(
            f"--data-parallel-size-local {user.dpl} cannot apply to nodes with GPUs {gpus} "
            f"(ranks per node {dpl}); remove it and let berth derive it per node"
        )
    return _Layout("dp_only", tp, pp, sum(dpl), dpl, 1)


def _spanning(gpus: list[int], user: UserParallelism, tp: int, pp: int) -> _Layout:
    per_rank = tp * pp * (user.pcp or 1)
    if len(set(gpus)) != 1:
        raise _fail(f"a rank of {per_rank} GPUs spans nodes, which needs equal nodes, but they hold {gpus} GPUs")
    if per_rank % gpus[0]:
        raise _fail(f"a rank of {per_rank} GPUs cannot be split evenly over nodes of {gpus[0]} GPUs")
    nodes_per_rank = per_rank // gpus[0]
    if len(gpus) % nodes_per_rank:
        raise _fail(f"{len(gpus)} nodes cannot hold whole ranks of {nodes_per_rank} nodes each")
    dp = len(gpus) // nodes_per_rank
    if user.dp is not None and user.dp != dp:
        raise _fail(f"--data-parallel-size {user.dp} does not match the {dp} ranks of {nodes_per_rank} nodes")
    if user.dpl is not None and user.dpl != 1:
        raise _fail(f"--data-parallel-size-local {user.dpl} must be 1 when a rank spans nodes")
    return _Layout("mp_only" if dp == 1 else "nested", tp, pp, dp, [1] * len(gpus), nodes_per_rank)


def _layout(gpus: list[int], user: UserParallelism) -> _Layout:
    _check_positive(user)
    pp, pcp = user.pp or 1, user.pcp or 1
    tp = _tensor_parallel(gpus, user, pp, pcp)
    if tp * pp * pcp <= min(gpus):
        return _dp_only(gpus, user, tp, pp)
    return _spanning(gpus, user, tp, pp)


def multinode_topology(gpus_per_node: list[int], node_rank: int, user: UserParallelism) -> MultinodeTopology:
    """The layout for ``node_rank`` (0 = leader) of nodes holding ``gpus_per_node`` GPUs."""
    if not 0 <= node_rank < len(gpus_per_node):
        raise _fail(f"node {node_rank} is outside the {len(gpus_per_node)} workers of the instance")
    layout = _layout(gpus_per_node, user)
    if layout.shape == "dp_only":
        start = sum(layout.dpl_per_node[:node_rank])
    else:
        start = node_rank // layout.nodes_per_rank
    return MultinodeTopology(
        shape=layout.shape,
        tp=layout.tp,
        pp=layout.pp,
        dp=layout.dp,
        dpl=layout.dpl_per_node[node_rank],
        nnodes=len(gpus_per_node),
        node_rank=node_rank,
        start_rank=start,
    )
