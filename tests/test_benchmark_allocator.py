"""The benchmarks' allocator helpers: the page-fault counter sees fresh
pages, and a pinned glibc mmap threshold makes a block that glibc would
otherwise mmap at every call come from the heap (each case runs in its
own process, as pinning lasts for the process; whether a block was
mmapped is glibc's IS_MMAPPED bit of its chunk header), and TensorFlow
takes its BFC allocator when asked before it loads."""

import os
import platform
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = 2048  # 8 MiB of 4 KiB pages
# A 64-byte-aligned request 176 bytes short of a page multiple: glibc's
# dynamic threshold lands just above it, so it is mmapped at every call
# (XLA's temporary buffer of an AltUp LM step at d=128 was such a size).
CYCLES = f"""
import ctypes, sys
sys.path.insert(0, {ROOT!r})
from benchmarks import allocator
pinned = {{pin}} and allocator.pin_mmap_threshold(mmap_max={{mmap_max}})
libc = ctypes.CDLL(None)
libc.posix_memalign.argtypes = [
    ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = {{size}}
def cycle():
    p = ctypes.c_void_p()
    assert libc.posix_memalign(ctypes.byref(p), 64, size) == 0
    mmapped = bool(ctypes.c_size_t.from_address(p.value - 8).value & 2)
    ctypes.memset(p, 1, size)
    libc.free(p)
    return mmapped
for _ in range(8):  # glibc's memalign settles on reusing a heap block
    cycle()
before = allocator.minor_page_faults()
mmapped = sum(cycle() for _ in range(4))
print(pinned, mmapped, (allocator.minor_page_faults() - before) / 4)
"""

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt thresholds are glibc's",
)


def _cycles(pin, size=PAGES * 4096 - 176, mmap_max=None):
    """(pinned, calls of 4 that mmapped, minor faults a call)."""
    code = CYCLES.format(pin=pin, size=size, mmap_max=mmap_max)
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return out[0] == "True", int(out[1]), float(out[2])


@glibc_only
def test_pinned_threshold_reuses_the_block_from_the_heap():
    pinned, mmapped, _ = _cycles(pin=True)
    assert pinned
    assert mmapped == 0


@glibc_only
def test_fault_counter_sees_a_block_mmapped_at_every_call():
    pinned, mmapped, faults = _cycles(pin=False)
    assert not pinned
    assert mmapped == 4
    assert faults >= PAGES * 0.9


@glibc_only
def test_a_block_over_the_largest_threshold_comes_from_the_heap_with_mmap_off():
    big = 12 * PAGES  # 96 MiB: above any threshold glibc accepts (32 MiB)
    _, mmapped, faults = _cycles(pin=True, size=big * 4096)
    assert mmapped == 4 and faults >= big * 0.9
    pinned, mmapped, _ = _cycles(pin=True, size=big * 4096, mmap_max=0)
    assert pinned
    # Never mmapped. Whether the heap block is then reused without fresh
    # pages is glibc's and the kernel's affair: every call here reused it,
    # and one CI run faulted on every call (and a size 176 bytes short of
    # a page multiple faults on 3 calls of 4), so the faults a step are a
    # benchmark figure recorded beside each result, not asserted here.
    assert mmapped == 0


TF_ALLOCATOR = f"""
import os, sys
sys.path.insert(0, {ROOT!r})
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
from benchmarks import allocator
bfc = {{bfc}} and allocator.use_tensorflow_bfc()
import tensorflow as tf
x = tf.random.normal((256, 256))
y = x @ x
try:  # only a BFC allocator keeps these statistics
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
except ValueError:
    peak = -1
print(bfc, allocator.use_tensorflow_bfc(), peak)
"""


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="TensorFlow's allocator: checked once, on the TensorFlow pass",
)
def test_tensorflow_takes_its_bfc_allocator_only_before_it_loads():
    # What BFC saves (fresh pages a step) depends on thread timing: it is
    # measured in the overhead benchmark (`minor_faults_per_step`).

    def run(bfc):
        out = subprocess.run(
            [sys.executable, "-c", TF_ALLOCATOR.format(bfc=bfc)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": "false"},
        ).stdout.split()
        return out[0] == "True", out[1] == "True", int(out[2])

    bfc, again, peak = run(bfc=True)
    assert bfc and not again  # set before TensorFlow loads, not after
    assert peak >= 2 * 256 * 256 * 4  # x and y at least, counted by BFC
    bfc, _, peak = run(bfc=False)
    assert not bfc and peak == -1
