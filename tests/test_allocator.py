"""glibc's allocator settings: large freed buffers are reused instead of faulted in again."""

from __future__ import annotations

import ctypes
import sys

import pytest

from robustdiag.allocator import reuse_freed_memory

linux_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "gnu_get_libc_version"),
    reason="glibc only",
)


def test_off_leaves_the_allocator_alone() -> None:
    assert reuse_freed_memory(False) is False


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_refuses_anything_but_a_boolean(bad: object) -> None:
    with pytest.raises(ValueError, match="must be true or false"):
        reuse_freed_memory(bad)


@linux_glibc
def test_on_glibc_the_setting_takes_effect() -> None:
    assert reuse_freed_memory(True) is True
