"""Large request bodies: what decoding one would take, checked first, and the decoding done away from the event loop.

orjson parses a body in one call that holds the GIL (about a second for 50 MB of JSON
numbers on a busy core), so a worker thread alone would still stall the loop for that
long. A large predict/infer body is therefore decoded in a child process that hands back
only the tensors (a numeric tensor crosses as one buffer); the parsed JSON, many times the
body's size, never exists in the server, and the child gives its freed heap back after
each request. Other large work (classify/regress bodies, encoding large outputs) runs in a
worker thread, where the codecs work in slices so the loop gets its turn between them.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

import numpy as np

from tidal.errors import Code, Internal, ResourceExhausted, TidalError

log = logging.getLogger("tidal.server")

DEFAULT_OFFLOAD_BYTES = 1 << 20
DEFAULT_MEMORY_BUDGET = 1 << 30
# Large decodes at once in threads: each may take up to the budget, so this bounds what they take together.
_THREADS_AT_ONCE = 2
# How long after a large request its memory is given back: by then its response has normally been sent.
SETTLE_SECONDS = 1.0
# Strings are unpacked this many at a time, so the loop gets its turn between slices.
_SLICE = 1 << 16
# The decoding child is replaced after this many requests, so whatever its heap keeps cannot grow for ever.
_CHILD_REQUESTS = 64


class PayloadTooLarge(ResourceExhausted):
    """Decoding the request would take more memory than one request may: HTTP 413, gRPC RESOURCE_EXHAUSTED."""

    @property
    def http_status(self) -> int:
        return 413


def decoded_size(body: bytes) -> int:
    """About the most memory decoding a JSON body into tensors takes, from a scan of its bytes.

    Each JSON value becomes a Python object plus a list slot, and then one element of a
    tensor (and of the exact path's flat list): about 24 bytes beside the object itself, a
    float 32, a string 49 plus its text, a list 56, an object 232. The counts are C-speed
    scans (tens of milliseconds for 64 MiB), done before any object is built.
    """
    lists = body.count(b"[")
    objects = body.count(b"{")
    strings = body.count(b'"') // 2
    values = body.count(b",") + lists + objects + 1
    numbers = max(0, values - strings - lists - objects)
    return len(body) + values * 24 + numbers * 32 + strings * 49 + lists * 56 + objects * 232


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


@functools.cache
def _libc():
    """The C library when it is glibc (malloc_trim, mallopt), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


def malloc_trim() -> None:
    """glibc keeps freed heap for reuse; malloc_trim(0) hands the free pages back (a no-op elsewhere)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def bound_heap(mmap_threshold: int = 1 << 20) -> None:
    """Serve blocks of `mmap_threshold` bytes and more from their own mappings, returned to the system when freed.

    glibc raises that threshold as large blocks are freed (up to 32 MiB), after which a
    large request's tensors and buffers land in heaps that a worker thread's arena only
    gives back from its top, so the process kept its peak. Setting it fixes it (and the
    trim threshold with it). A no-op where the C library is not glibc.
    """
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
        libc.mallopt(_M_TRIM_THRESHOLD, 4 * mmap_threshold)


class PackedStrings:
    """A BYTES tensor (str and bytes items) as three buffers: it crosses the process boundary in one copy.

    Unpickling an object array builds all its items in one call that holds the GIL (seconds
    for millions of strings); these are unpacked in a worker thread, a slice at a time.
    """

    __slots__ = ("shape", "blob", "ends", "text")

    def __init__(self, arr: np.ndarray) -> None:
        items = arr.reshape(-1).tolist()
        raw = [v.encode("utf-8", "surrogatepass") if type(v) is str else bytes(v) for v in items]
        self.shape = arr.shape
        self.text = np.fromiter((type(v) is str for v in items), dtype=bool, count=len(items))
        self.ends = np.cumsum(np.fromiter((len(r) for r in raw), dtype=np.int64, count=len(raw)))
        self.blob = b"".join(raw)

    def unpack(self) -> np.ndarray:
        n = self.text.size
        out = np.empty(n, dtype=object)
        starts = np.concatenate(([0], self.ends[:-1])) if n else self.ends
        blob = self.blob
        for i in range(0, n, _SLICE):
            out[i:i + _SLICE] = [blob[a:b].decode("utf-8", "surrogatepass") if t else blob[a:b] for a, b, t in
                                 zip(starts[i:i + _SLICE].tolist(), self.ends[i:i + _SLICE].tolist(),
                                     self.text[i:i + _SLICE].tolist())]
        return out.reshape(self.shape)


def _walk(value, fn):
    """`value` with `fn` applied to each array inside its tuples, lists and dicts."""
    if isinstance(value, (np.ndarray, PackedStrings)):
        return fn(value)
    if type(value) in (tuple, list):
        return type(value)(_walk(v, fn) for v in value)
    if type(value) is dict:
        return {k: _walk(v, fn) for k, v in value.items()}
    return value


def _pack(value):
    return PackedStrings(value) if isinstance(value, np.ndarray) and value.dtype == object else value


def _unpack(value):
    return value.unpack() if isinstance(value, PackedStrings) else value


def _in_child(fn: Callable[..., Any], args: tuple) -> tuple:
    """Run a decoder in the child; errors cross as plain values (a TidalError's code does not survive pickling)."""
    try:
        return ("ok", _walk(fn(*args), _pack))
    except TidalError as exc:
        return ("error", exc.code.value, exc.message, isinstance(exc, PayloadTooLarge))
    except MemoryError:
        return ("error", Code.RESOURCE_EXHAUSTED.value, "not enough memory to decode the request; send less at once",
                True)
    except Exception:
        log.exception("decoding a large request failed")  # the child's stderr is the server's log
        return ("fault",)
    finally:
        malloc_trim()


class LargeBodies:
    """Where a request's decoding runs, and what it may take: inline when small, elsewhere when large.

    `processes=False` decodes large bodies in worker threads instead of a child process.
    """

    def __init__(self, offload_bytes: int = DEFAULT_OFFLOAD_BYTES, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 *, processes: bool = True) -> None:
        self.offload_bytes = offload_bytes
        self.memory_budget = memory_budget
        self.processes = processes
        self._slots: asyncio.Semaphore | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._trims: set[asyncio.Future] = set()
        self._settle: asyncio.TimerHandle | None = None

    def is_large(self, size: int) -> bool:
        return size > self.offload_bytes

    def admit(self, body: bytes, what: str = "the request's JSON") -> None:
        """Refuse (413) a JSON body whose decoding would pass the per-request memory budget."""
        need = decoded_size(body)
        if need > self.memory_budget:
            raise PayloadTooLarge(
                f"decoding {what} ({_mib(len(body))}) would take about {_mib(need)}, more than the "
                f"per-request budget of {_mib(self.memory_budget)} (--request_memory_budget_bytes); "
                "send fewer or smaller tensors per request, or the binary tensor format")

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` in a worker thread, a few large ones at a time, so the loop keeps answering."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(_THREADS_AT_ONCE)
        async with self._slots:
            return await asyncio.to_thread(fn, *args)

    async def decode(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` in the decoding child (one at a time); `fn` and its arguments and result must pickle."""
        if not self.processes:
            return await self.run(fn, *args)
        if self._pool is None:
            # spawn, not fork: the server has threads (gRPC, runtimes) that a forked child would inherit broken.
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=bound_heap, max_tasks_per_child=_CHILD_REQUESTS)
        pool = self._pool
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(pool, _in_child, fn, args)
            # The pool's feeder thread holds the last request it sent (the whole body) until it sends
            # another: send it a small one.
            pool.submit(int)
        except BrokenProcessPool:
            # The child died (the kernel's OOM killer, most likely): a new one serves the next request.
            self._pool = None
            raise PayloadTooLarge("the process decoding the request stopped (out of memory?); send less at once"
                                  ) from None
        if outcome[0] == "ok":
            return await self.run(_walk, outcome[1], _unpack)
        if outcome[0] == "fault":
            raise Internal("Internal: decoding the request failed; see the server log")
        _, code, message, too_large = outcome
        if too_large:
            raise PayloadTooLarge(message)
        raise TidalError(message, Code(code))

    def release(self) -> None:
        """After a large request: once its response has gone, free what cycles hold and give the heap back."""
        if self._settle is None:
            self._settle = asyncio.get_running_loop().call_later(SETTLE_SECONDS, self._give_back)

    def _give_back(self) -> None:
        self._settle = None
        # A closed connection and its parser form a cycle that keeps its last body until a full collection.
        gc.collect()
        future = asyncio.get_running_loop().run_in_executor(None, malloc_trim)
        self._trims.add(future)
        future.add_done_callback(self._trims.discard)

    def close(self) -> None:
        if self._settle is not None:
            self._settle.cancel()
            self._settle = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
