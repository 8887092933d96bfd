"""Memory in a long-running server process: the garbage collector's settings, the C
allocator's thresholds (``tune_allocator``), and freed pages handed back to the system
after a bulk job (``return_free_memory``).

Measured under load: full collections of the heap stalled the event loop for 20–45 ms
about once a second, and a large young generation (20,000) made every young collection a
multi-millisecond pause too. So a server freezes its startup heap (modules, schemas,
settings: alive for the whole process) out of every later collection, keeps young
collections at the default size (short and frequent), and makes full collections a
hundred times rarer.

It must run before the server starts working: a drain's first second, before the gateway
listened, had paid two full collections of 40 and 83 ms while the dispatcher ran.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable


def freeze_startup_heap() -> None:
    """Collects once, freezes what is left, and sets the thresholds (see the module doc)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(700, 10, 1000)


def _glibc(name: str, *args: type) -> Callable[..., int] | None:
    try:
        fn = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS; Windows: TypeError)
        return None
    fn.argtypes = list(args)
    fn.restype = ctypes.c_int
    found: Callable[..., int] = fn
    return found


_TRIM = _glibc("malloc_trim", ctypes.c_size_t)
_MALLOPT = _glibc("mallopt", ctypes.c_int, ctypes.c_int)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# blocks from 64 KiB up get pages of their own, which free() hands back at once; and a
# heap whose free top passes 128 KiB gives it back (glibc's defaults: 128 KiB, each raised
# as large blocks are freed, up to 32 MiB and 64 MiB)
MMAP_THRESHOLD = 64 * 1024
TRIM_THRESHOLD = 128 * 1024


def tune_allocator() -> bool:
    """Fixes glibc's thresholds for large blocks (see above); answers whether it could.

    By default glibc raises both thresholds each time a large block is freed, so after the
    first batches of a campaign its large buffers (provider batches, report bodies) come
    from the heap, whose freed pages go back only from its top, and only past the raised
    trim threshold. Fixed, a campaign to 200,000 recipients peaked at 147.2–148.9 MB
    against 160.8–163.1 (five alternating runs each), one to a million at 177.4 against
    186.4; rates and drains were within the noise.
    """
    if _MALLOPT is None:
        return False
    return bool(
        _MALLOPT(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and _MALLOPT(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def return_free_memory() -> bool:
    """Hands the allocator's free pages back to the system (glibc's ``malloc_trim``);
    answers whether it could.

    After a bulk job such as a recipients' import, glibc keeps the pages it freed (27 MB
    after 100,000 rows, measured) for later use, and the process's resident memory stays
    at the job's level while it idles. Trimming takes well under a millisecond.
    """
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
