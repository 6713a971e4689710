"""proxy/heap.py: the SHIFTPROXY_HEAP_RELEASE setting, and malloc_trim really returning freed heap pages."""

from __future__ import annotations

import ctypes
import logging
import os

import pytest

from proxy.heap import ENV, RELEASE_INTERVAL, Heap

glibc = pytest.mark.skipif(not Heap({}).enabled, reason="needs Linux with glibc")


@pytest.mark.parametrize("value", ["off", "OFF", "0", "false", "no"])
def test_turned_off(value: str) -> None:
    heap = Heap({ENV: value})
    assert not heap.enabled
    assert heap.release() is False


@glibc
def test_default_and_interval() -> None:
    assert Heap({}).interval == RELEASE_INTERVAL
    assert Heap({ENV: "on"}).interval == RELEASE_INTERVAL
    heap = Heap({ENV: " 2.5 "})
    assert heap.enabled and heap.interval == 2.5


@pytest.mark.parametrize("value", ["soon", "-1", "inf", "nan"])
def test_a_bad_interval_is_named_and_the_default_kept(value: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="shiftproxy"):
        heap = Heap({ENV: value})
    assert heap.interval == RELEASE_INTERVAL
    assert f"{ENV}='{value}' is neither `off` nor a number of seconds" in caplog.text


def resident() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@glibc
def test_release_returns_freed_blocks_pinned_between_live_ones() -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    size, count = 256 * 1024, 256  # as uvloop's TLS buffers; half of them freed: 32 MiB
    libc.free(libc.malloc(size + 65536))  # an mmapped block freed raises glibc's mmap threshold above `size`
    blocks = []
    for _ in range(count):
        block = libc.malloc(size)
        libc.memset(block, 1, size)
        blocks.append(block)
    try:
        for block in blocks[::2]:  # each freed one lies between two in use: free() cannot give it back
            libc.free(block)
        kept = resident()
        assert Heap({}).release()
        returned = kept - resident()
        freed = count // 2 * size
        assert returned > freed // 2, f"{returned / 2**20:.1f} MiB returned of {freed / 2**20:.0f} freed"
    finally:
        for block in blocks[1::2]:
            libc.free(block)
