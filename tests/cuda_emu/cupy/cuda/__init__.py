"""cupy.cuda on the emulator: one device (id 0), a runtime that reports an emulated GPU, streams
and events that complete immediately (every launch runs synchronously on the host)."""
from __future__ import annotations

import time
import types

from .._kernel import CompileException


class CUDARuntimeError(RuntimeError):
    pass


class CUDADriverError(RuntimeError):
    pass


driver = types.ModuleType(__name__ + ".driver")
driver.CUDADriverError = CUDADriverError
compiler = types.ModuleType(__name__ + ".compiler")
compiler.CompileException = CompileException

_PROPS = {"name": b"cupy emulator (CPU)", "major": 9, "minor": 0, "multiProcessorCount": 132,
          "totalGlobalMem": 64 * 2**30, "sharedMemPerBlock": 48 * 1024, "sharedMemPerBlockOptin": 227 * 1024,
          "maxThreadsPerBlock": 1024, "warpSize": 32, "regsPerBlock": 65536, "maxThreadsDim": (1024, 1024, 64),
          "maxGridSize": (2**31 - 1, 65535, 65535), "clockRate": 1980000, "l2CacheSize": 50 * 2**20}


def _check_id(device):
    if int(device) != 0:
        raise CUDARuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {device}")


def _get_device_count():
    return 1


def _get_device_properties(device):
    _check_id(device)
    return dict(_PROPS)


runtime = types.ModuleType(__name__ + ".runtime")
runtime.CUDARuntimeError = CUDARuntimeError
runtime.getDeviceCount = _get_device_count
runtime.getDeviceProperties = _get_device_properties
runtime.getDevice = lambda: 0
runtime.runtimeGetVersion = lambda: 13000
runtime.driverGetVersion = lambda: 13000
runtime.deviceSynchronize = lambda: None
runtime.memGetInfo = lambda: (_PROPS["totalGlobalMem"], _PROPS["totalGlobalMem"])
runtime.is_hip = False


class Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        _check_id(self.id)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def use(self):
        pass

    def synchronize(self):
        pass

    @property
    def compute_capability(self):
        return "90"

    @property
    def attributes(self):
        return {"MultiProcessorCount": _PROPS["multiProcessorCount"], "MaxThreadsPerBlock": 1024,
                "WarpSize": 32, "ComputeCapabilityMajor": 9, "ComputeCapabilityMinor": 0}

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class Stream:
    null = None

    def __init__(self, null=False, non_blocking=False, ptr=None):
        self.ptr = 0

    def synchronize(self):
        pass

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @property
    def done(self):
        return True


Stream.null = Stream(null=True)


def get_current_stream(device=None):
    return Stream.null


class Event:
    """Records host time (launches are synchronous, so host time is the kernels' time)."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    @property
    def done(self):
        return True


def get_elapsed_time(start_event, end_event):
    """Milliseconds between two recorded events."""
    if start_event.t is None or end_event.t is None:
        raise CUDARuntimeError("cudaErrorInvalidResourceHandle: event not recorded")
    return (end_event.t - start_event.t) * 1e3


import sys as _sys  # noqa: E402

for _m in (driver, compiler, runtime):
    _sys.modules[_m.__name__] = _m


def is_available():
    return True


__all__ = ["Device", "Stream", "Event", "get_elapsed_time", "get_current_stream", "runtime", "driver", "compiler",
           "CUDARuntimeError", "CUDADriverError", "is_available"]
