"""Plans run as local processes, each container under a small supervisor (the shim).

See :mod:`berth.deployers.process.deployer` for what runs and how, and
:mod:`berth.deployers.process.shim` for the supervisor (a by-path program).
"""

from berth.deployers.process.deployer import ProcessDeployer

__all__ = ["ProcessDeployer"]
