"""The host allocator under a timed JAX CPU step: minor page faults and a
fixed glibc mmap threshold.

XLA CPU allocates the temporary buffer of a compiled step (tens of MiB
for the overhead benchmark's models) with `malloc` at every call and
frees it at the end. glibc serves a request at or above its mmap
threshold with a fresh `mmap`, and `free` gives those pages back with
`munmap`; the threshold moves with the sizes freed before (it rises to
the largest mmapped block freed, up to 32 MiB). Depending on where a
step's temporary buffer falls against it, every call may get new pages,
and the first write to each 4 KiB page is a minor page fault that the
kernel serves by zeroing the page: the step's kernels all run slower, by
an amount that has nothing to do with what they compute.

`minor_page_faults` counts these faults (load-independent);
`pin_mmap_threshold` fixes the threshold (and stops heap trimming) so
that blocks below it are reused from the heap at every call. A block of
32 MiB or more (the Transformer's step at 16 sequences: 38 MiB at
d = 128, 150 MiB at d = 512) is mmapped whatever the threshold, unless
mmap is off (`mmap_max=0`): then it too comes from the heap and is reused.
At d = 512 that took a JAX step from 416 to 341 ms (39,000 faults a step
to 0), the same for the model and its baseline, so the faults diluted
every ratio toward 1. With mmap off, glibc's aligned allocation can
still take fresh heap pages for some sizes (a 96 MiB block 176 bytes
short of a page multiple did on 3 calls of 4 after warm-up, and in one
CI run a page multiple did on every call), so the faults a step stay
recorded beside each figure.

TensorFlow's CPU tensors, and the buffers of its XLA steps, come from
`malloc` too, and kept faulting with mmap off (3,500 faults a ResNet20
step, 31,000 a Transformer step at d = 512, a number that varies with
thread timing); `use_tensorflow_bfc` gives them TensorFlow's BFC
allocator, which keeps the memory it has taken (14 and 8 faults a step
there).
"""

import ctypes
import ctypes.util
import os
import resource
import sys

# mallopt parameters (glibc malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
# The largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2).
MAX_MMAP_THRESHOLD = 32 * 2**20


def minor_page_faults():
    """Minor page faults of this process so far (all threads)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def pin_mmap_threshold(
    nbytes=MAX_MMAP_THRESHOLD, trim_bytes=2**30, mmap_max=None
):
    """Fixes glibc's mmap threshold at `nbytes` and its trim threshold at
    `trim_bytes` for the rest of the process; with `mmap_max=0`, glibc
    mmaps no block at all (every size comes from the heap).

    Returns whether it took effect (False where libc has no `mallopt`,
    e.g. not glibc, or glibc refused a value).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, int(nbytes)) == 1
    if mmap_max is not None:
        ok = ok and mallopt(M_MMAP_MAX, int(mmap_max)) == 1
    return ok and mallopt(M_TRIM_THRESHOLD, int(trim_bytes)) == 1


def use_tensorflow_bfc():
    """Makes TensorFlow allocate CPU memory with its BFC allocator, which
    keeps the pages it has taken, instead of `malloc` per tensor.

    TensorFlow reads the setting once, when it loads; returns False where
    it is loaded already (the setting then takes no effect).
    """
    if "tensorflow" in sys.modules:
        return False
    os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    return True
