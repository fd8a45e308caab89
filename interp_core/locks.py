"""`FairLock`: a re-entrant lock that threads get in the order they asked for it.

    >>> lock = FairLock()
    >>> with lock:            # like threading.RLock: the owner may take it again
    ...     with lock:
    ...         ...

Python's own locks let the releasing thread take the lock straight back, so a long job that releases the
model lock between chunks (to let short requests through) could still starve every other thread. `release`
here hands the lock to the longest-waiting thread before the releasing thread can ask again; when it asks again
it queues behind the threads that were already waiting.
"""

from __future__ import annotations

import threading
from collections import deque


class _Waiter:
    __slots__ = ("thread", "granted", "event")

    def __init__(self, thread: int) -> None:
        self.thread = thread
        self.granted = False  # set under the mutex when the lock was handed to this waiter
        self.event = threading.Event()


class FairLock:
    """A FIFO-fair re-entrant lock with RLock's interface: `acquire(blocking=True, timeout=-1)`, `release()`
    and the context manager. `release` by a thread that does not hold it raises RuntimeError (as RLock does)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()  # guards the fields below; held only for a few lines, never while waiting
        self._owner: int | None = None  # thread ident of the holder
        self._count = 0  # re-entrant depth of the holder
        self._waiters: deque[_Waiter] = deque()  # oldest first

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock (again, when this thread holds it already); False when it was not free within `timeout`
        seconds (-1: wait as long as it takes) or, with blocking=False, not free at once."""
        if not blocking and timeout != -1:
            raise ValueError("can't specify a timeout for a non-blocking call")
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                self._count += 1
                return True
            if self._owner is None and not self._waiters:
                self._owner, self._count = me, 1
                return True
            if not blocking:
                return False
            waiter = _Waiter(me)
            self._waiters.append(waiter)
        waiter.event.wait(None if timeout is None or timeout < 0 else timeout)
        with self._mutex:
            if waiter.granted:  # handed over (possibly just as the wait timed out): it is ours
                return True
            self._waiters.remove(waiter)
            return False

    def release(self) -> None:
        """Give one level back; at the outermost level hand the lock to the longest-waiting thread, if any."""
        me = threading.get_ident()
        with self._mutex:
            if self._owner != me:
                raise RuntimeError("cannot release a FairLock this thread does not hold")
            self._count -= 1
            if self._count:
                return
            if self._waiters:
                waiter = self._waiters.popleft()
                self._owner, self._count = waiter.thread, 1
                waiter.granted = True
                waiter.event.set()
            else:
                self._owner = None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()

    def locked(self) -> bool:
        """True while some thread holds the lock."""
        with self._mutex:
            return self._owner is not None

    def held_by_me(self) -> bool:
        """True when the calling thread holds the lock (at any depth)."""
        with self._mutex:
            return self._owner == threading.get_ident()

    def n_waiting(self) -> int:
        """How many threads are queued for the lock now (a long job may release between chunks only when > 0)."""
        with self._mutex:
            return len(self._waiters)

    def __repr__(self) -> str:
        with self._mutex:
            return f"<FairLock owner={self._owner} depth={self._count} waiting={len(self._waiters)}>"
