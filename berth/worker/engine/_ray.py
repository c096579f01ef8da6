"""Reading Ray's dashboard: which nodes of a head are alive (``GET /nodes?view=summary``, Ray 2.x)."""

from __future__ import annotations

from typing import Any


def joined_nodes(body: Any) -> set[str]:
    """Addresses of alive nodes in a ``/nodes?view=summary`` answer (empty if it is not one):
    ``data.summary[].raylet.{nodeManagerAddress,state}``."""
    summary = (body.get("data") or {}).get("summary") if isinstance(body, dict) else None
    alive: set[str] = set()
    for node in summary if isinstance(summary, list) else []:
        raylet = node.get("raylet") if isinstance(node, dict) else None
        if isinstance(raylet, dict) and raylet.get("state") == "ALIVE" and raylet.get("nodeManagerAddress"):
            alive.add(str(raylet["nodeManagerAddress"]))
    return alive
