"""A bounded prefetch of batches: the next ones are made in a background thread while the current step runs.

``prefetched(items, depth)`` iterates ``items`` in a daemon thread that keeps at most ``depth`` finished items
in a queue ahead of the consumer. One thread consumes ``items``, in order, exactly as a plain ``for`` would: a
seeded sampler draws from its generators in the same order, so the batches and their order are identical to
iterating without prefetch (``depth=0``, which starts no thread). numpy's extraction and copies release the
GIL for most of their time, so sampling overlaps a framework's step (which releases it while its kernels run).

An exception raised while making an item is re-raised to the consumer at that item's position; leaving the
``with`` block early (an exception in the step, early stopping, an ``islice``) stops the thread and joins it,
so no thread outlives its epoch.

Example:
    >>> with prefetched(iter(range(5)), depth=2) as items:
    ...     list(items)
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
THREAD_NAME = "bench-prefetch"
"""The name of every prefetch thread (tests look for leftovers by it)."""
_POLL_S = 0.05
"""How often a producer blocked on a full queue checks whether it was asked to stop (seconds)."""


class _End:
    """Put in the queue after the last item."""


class _Failed:
    """Put in the queue when making an item raised: the consumer re-raises ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetcher(Generic[T]):
    """Iterate ``items`` with up to ``depth`` (>= 1) items made ahead in a background thread; ``close()`` (or
    leaving the ``with`` block) stops and joins it."""

    def __init__(self, items: Iterable[T], depth: int) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth={depth} must be >= 1")
        self._items = items
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._produce, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        """Put ``item`` once there is room; False when asked to stop first."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        iterator = iter(self._items)
        try:
            for item in iterator:
                if not self._put(item):
                    return
            self._put(_End())
        except BaseException as exc:  # forwarded to the consumer, raised there at this item's position
            self._put(_Failed(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:  # a generator: run its cleanup in the thread that ran it
                close()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, _End):
            self._done = True
            raise StopIteration
        if isinstance(item, _Failed):
            self._done = True
            raise item.error
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop making items, drop those made ahead and wait for the thread to end (after its current item)."""
        self._done = True
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=_POLL_S)
        self._thread.join()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def prefetched(items: Iterable[T], depth: int) -> Iterator[Iterator[T]]:
    """``items`` as an iterator with ``depth`` items made ahead in a thread (``depth=0``: the items as they are,
    no thread); the thread is stopped and joined when the block ends, however it ends."""
    if depth <= 0:
        yield iter(items)
        return
    with Prefetcher(items, depth) as ahead:
        yield ahead
