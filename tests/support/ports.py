"""Ports for tests on a shared machine: never a fixed number, always ones nothing holds right now.

Several test runs (and other servers) share the machine, so a test takes its ports from the
kernel (:func:`free_port`) or a block picked at random below the ephemeral range (:func:`free_range`),
which the kernel never hands out to clients, rather than a range written in the test. Both are
berth's own helpers (:mod:`berth.utils.ports`), which the demo's worker uses too.
"""

from __future__ import annotations

from berth.utils.ports import free_port, free_port_range as free_range

__all__ = ["free_port", "free_range"]
