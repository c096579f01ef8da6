"""``vllm serve`` plans run as forks of a daemon that imported vLLM once (fast starts).

See :mod:`berth.deployers.launcher.deployer`, and :mod:`berth.deployers.launcher.daemon` for
the daemon (a by-path program).
"""

from berth.deployers.launcher.deployer import LauncherDeployer, vllm_missing

__all__ = ["LauncherDeployer", "vllm_missing"]
