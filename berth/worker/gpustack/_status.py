"""What this worker tells GPUStack about itself: CPU, memory, disk, OS, and its accelerators.

Accelerators are the configured ``gpu_devices`` when there are any (each may carry ``name`` and
``memory_total``), else what gpustack-runtime's detector finds on this host. Host figures come
from ``/proc`` (Linux); a figure that cannot be read is reported as unknown, never invented.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import socket
import time
from typing import Any

from berth.schemas import GPUDevice
from berth.worker.settings import Settings

logger = logging.getLogger(__name__)
_MIB = 1 << 20
_RUNTIME_TYPE = {"nvidia": "cuda", "amd": "rocm", "ascend": "cann", "hygon": "dtk", "mthreads": "musa",
                 "iluvatar": "corex", "metax": "maca", "cambricon": "neuware"}


class CPUSampler:
    """CPU utilization (0-100) between two calls, from ``/proc/stat``."""

    def __init__(self) -> None:
        self._last: tuple[int, int] | None = None

    @staticmethod
    def _times() -> tuple[int, int] | None:
        try:
            with open("/proc/stat", encoding="ascii") as stat:
                fields = [int(v) for v in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    def utilization(self) -> float | None:
        now = self._times()
        last, self._last = self._last, now
        if now is None or last is None or now[0] <= last[0]:
            return None
        total, idle = now[0] - last[0], now[1] - last[1]
        return round(100.0 * (total - idle) / total, 2)


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    values[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return values


def _memory() -> dict[str, Any]:
    info = _meminfo()
    total = info.get("MemTotal", 0)
    used = total - info.get("MemAvailable", total)
    rate = round(100.0 * used / total, 2) if total else None
    return {"total": total, "used": used, "utilization_rate": rate, "is_unified_memory": False}


def _uptime() -> dict[str, Any]:
    try:
        with open("/proc/uptime", encoding="ascii") as uptime:
            seconds = float(uptime.read().split()[0])
    except (OSError, ValueError, IndexError):
        return {"uptime": 0, "boot_time": ""}
    boot = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() - seconds))
    return {"uptime": seconds, "boot_time": boot}


def _filesystem(path: str) -> list[dict[str, Any]]:
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return []
    return [{"name": "data_dir", "mount_point": path, "mount_from": "", "total": usage.total,
             "used": usage.used, "free": usage.free, "available": usage.free}]


def device_status(device: GPUDevice) -> dict[str, Any]:
    """A configured device as GPUStack's ``GPUDeviceStatus``."""
    return {
        "vendor": device.vendor,
        "type": device.type or _RUNTIME_TYPE.get(device.vendor, ""),
        "index": device.index,
        "device_index": device.index,
        "device_chip_index": 0,
        "arch_family": device.arch_family,
        "name": device.name or f"{device.vendor} device {device.index}",
        "uuid": device.uuid or "",
        "core": {"total": 0, "utilization_rate": 0.0},
        "memory": {"total": device.memory_total or 0, "used": 0, "utilization_rate": 0.0, "is_unified_memory": False},
    }


def detected_devices() -> list[dict[str, Any]]:
    """Accelerators gpustack-runtime detects here, as GPUStack's ``GPUDeviceStatus``; [] when none."""
    try:
        from gpustack_runtime.detector import detect_devices, manufacturer_to_backend

        devices = detect_devices()
    except Exception as exc:  # noqa: BLE001 - a broken driver must not stop the worker
        logger.warning("accelerator detection failed (%s); reporting none", exc)
        return []
    return [_detected(device, manufacturer_to_backend(device.manufacturer)) for device in devices or []]


def _detected(device: Any, runtime: Any) -> dict[str, Any]:
    total = int((device.memory or 0) * _MIB)
    return {
        "vendor": device.manufacturer.value,
        "type": getattr(runtime, "value", runtime) or "",
        "index": device.index,
        "device_index": device.index,
        "device_chip_index": 0,
        "name": device.name or "",
        "uuid": device.uuid or "",
        "driver_version": device.driver_version,
        "runtime_version": device.runtime_version,
        "compute_capability": device.compute_capability,
        "core": {"total": device.cores or 0, "utilization_rate": device.cores_utilization},
        "memory": {"total": total, "used": int((device.memory_used or 0) * _MIB),
                   "utilization_rate": device.memory_utilization, "is_unified_memory": False},
        "temperature": device.temperature,
        "power": device.power,
        "power_used": device.power_used,
    }


def host_status(settings: Settings, cpu: CPUSampler) -> dict[str, Any]:
    """GPUStack's ``WorkerStatus`` of this host."""
    devices = [device_status(d) for d in settings.gpu_devices] if settings.gpu_devices else detected_devices()
    uname = os.uname()
    return {
        "cpu": {"total": os.cpu_count() or 0, "utilization_rate": cpu.utilization()},
        "memory": _memory(),
        "swap": {"total": _meminfo().get("SwapTotal", 0)},
        "filesystem": _filesystem(str(settings.data_dir)),
        "os": {"name": platform.system(), "version": platform.release()},
        "kernel": {"name": uname.sysname, "release": uname.release, "version": uname.version,
                   "architecture": uname.machine},
        "uptime": _uptime(),
        "gpu_devices": devices,
    }


def registration_body(settings: Settings, cpu: CPUSampler, worker_uuid: str) -> dict[str, Any]:
    """What ``POST /v2/workers`` and ``POST /v2/worker-status`` carry (GPUStack's ``WorkerStatusStored``)."""
    return {
        "hostname": socket.gethostname(),
        "ip": settings.worker_ip,
        "ifname": settings.worker_ifname,
        "port": settings.port,
        "metrics_port": -1,
        "system_reserved": {"ram": 0, "vram": 0},
        # Sent even when empty: GPUStack keeps a worker not ready while an old message stands.
        "state_message": None,
        "status": host_status(settings, cpu),
        "worker_uuid": worker_uuid,
        "proxy_mode": "worker",
    }
