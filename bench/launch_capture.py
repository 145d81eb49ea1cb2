"""Capture Triton launches instead of running them, to run or compile one of them on its own.

    with captured_launches((module, "kernel_name")) as launches:
        call()                                   # module.kernel_name[grid](*args, **kw) is recorded
    for kernel, grid, args, kw in launches: ...  # kernel[grid](*args, **kw) runs it later

`bench.kernels` replays one stage of the decode layer kernel alone (its time, away from the
others); tests/hopper_compile.py compiles each launch for an H100 without a GPU. The recorded args
keep the tensors the call allocated alive, so a launch can be replayed after the call returned.
"""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def captured_launches(*where):
    """For (module, name) pairs: module.name[grid](*args, **kw) appends (kernel, grid, args, kw) to
    the yielded list instead of launching."""
    kernels, launches = [getattr(module, name) for module, name in where], []

    class Capture:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            return lambda *args, **kw: launches.append((self.kernel, grid, args, kw))
    for (module, name), kernel in zip(where, kernels):
        setattr(module, name, Capture(kernel))
    try:
        yield launches
    finally:
        for (module, name), kernel in zip(where, kernels):
            setattr(module, name, kernel)
