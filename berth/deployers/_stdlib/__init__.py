"""What the by-path programs of the deployers share: standard library only.

The process deployer's supervisor (:mod:`berth.deployers.process.shim`) and the launcher's
daemon (:mod:`berth.deployers.launcher.daemon`) run as programs of their own, started by path.
They must not import berth's upper layers or gpustack-runtime: the shim starts once per
container (every import is start-up latency), and the daemon forks vLLM servers (every import
is memory in each of them). So the modules here, and the by-path programs with the siblings
they import, use the standard library only. ``tests/unit/test_stdlib_only.py`` checks it.

One way to run them: ``python -I -P run.py MODULE ARGS...`` (:mod:`.run`) registers berth's
parent packages without running their ``__init__`` and runs ``MODULE`` as ``__main__``, so a
by-path program imports its siblings with the same absolute names as when berth imports it.

* :mod:`.proc` -- processes: ``/proc``, signals and process groups, subreaping, waiting;
* :mod:`.files` -- atomic JSON state files, default run directories;
* :mod:`.names` -- the one rule for workload and container names.
"""
