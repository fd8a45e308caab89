"""FairLock: re-entrant like RLock, but threads get it in the order they asked, so a thread that releases and
asks again between chunks cannot starve another. Every check is an ordering property (who got the lock before
whom), never a timing threshold; the only waits are "until this thread is queued", bounded by a long deadline."""

from __future__ import annotations

import threading
import time

import pytest

from interp_core.locks import FairLock

DEADLINE_S = 30.0  # only for waiting until a thread is queued; a pass never gets near it


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.001)


def try_from_other_thread(lock: FairLock) -> bool:
    """Whether another thread can take `lock` at once (it gives it back when it could)."""
    got: list[bool] = []

    def probe() -> None:
        ok = lock.acquire(blocking=False)
        got.append(ok)
        if ok:
            lock.release()

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return got[0]


def test_the_owner_may_re_enter_and_the_lock_is_free_only_after_the_last_release():
    lock = FairLock()
    with lock:
        assert lock.acquire(blocking=False)  # re-entry never waits
        with lock:
            assert lock.held_by_me()
            assert not try_from_other_thread(lock)
        lock.release()
        assert not try_from_other_thread(lock)  # still held once
    assert not lock.locked()
    assert try_from_other_thread(lock)


def test_waiters_get_the_lock_in_the_order_they_asked():
    lock = FairLock()
    order: list[int] = []
    lock.acquire()

    def worker(i: int) -> None:
        with lock:
            order.append(i)

    threads = []
    for i in range(6):
        thread = threading.Thread(target=worker, args=(i,))
        thread.start()
        wait_until(lambda n=i + 1: lock.n_waiting() == n, f"thread {i} is queued")  # queue them one by one
        threads.append(thread)
    lock.release()
    for thread in threads:
        thread.join()
    assert order == list(range(6))
    assert not lock.locked() and lock.n_waiting() == 0


def test_a_new_request_queues_behind_the_waiters_even_when_the_lock_is_momentarily_free():
    lock = FairLock()
    lock.acquire()
    got: list[str] = []
    waiter = threading.Thread(target=lambda: (lock.acquire(), got.append("waiter"), lock.release()))
    waiter.start()
    wait_until(lambda: lock.n_waiting() == 1, "the waiter is queued")
    lock.release()  # handed to the waiter before this thread can ask again
    with lock:
        got.append("releaser")
    waiter.join()
    assert got == ["waiter", "releaser"]


def test_acquire_times_out_and_leaves_the_queue():
    lock = FairLock()
    lock.acquire()
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(lock.acquire(timeout=0.05)))
    thread.start()
    thread.join()
    assert results == [False]
    assert lock.n_waiting() == 0  # the timed-out waiter is not handed the lock later
    assert lock.acquire(blocking=False)  # the owner re-enters regardless
    lock.release()
    lock.release()
    assert not lock.locked()
    assert try_from_other_thread(lock)
    with pytest.raises(ValueError):
        lock.acquire(blocking=False, timeout=1)


def test_release_by_a_thread_that_does_not_hold_it_raises():
    lock = FairLock()
    with pytest.raises(RuntimeError):
        lock.release()  # nobody holds it
    lock.acquire()
    errors: list[BaseException] = []

    def other() -> None:
        try:
            lock.release()
        except RuntimeError as error:
            errors.append(error)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert lock.held_by_me()  # still ours
    lock.release()
    assert not lock.locked()


def test_a_thread_looping_acquire_release_does_not_starve_one_that_asked_once():
    lock = FairLock()
    log: list[str] = []
    asked = threading.Event()
    n_loops, ask_at = 200, 10

    def looper() -> None:
        for i in range(n_loops):
            with lock:
                log.append(f"loop {i}")
                if i == ask_at:  # hold the lock until the other thread is queued for it
                    asked.set()
                    wait_until(lambda: lock.n_waiting() == 1, "the other thread is queued")

    def once() -> None:
        asked.wait()
        with lock:
            log.append("once")

    threads = [threading.Thread(target=looper), threading.Thread(target=once)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(log) == n_loops + 1
    assert log.index("once") == ask_at + 1  # right after the chunk during which it asked, not after the loop


def test_tokenising_and_decoding_do_not_wait_for_the_model_lock(gpt2_bundle):
    from interp_core.tokens import decode, encode, single_token_id, token_texts, tokenize_prompt

    assert isinstance(gpt2_bundle.lock, FairLock)
    held, done = threading.Event(), threading.Event()

    def hold_model_lock() -> None:
        with gpt2_bundle.lock:  # as a long forward pass would
            held.set()
            done.wait(DEADLINE_S)

    holder = threading.Thread(target=hold_model_lock)
    holder.start()
    held.wait()
    results: list[object] = []

    def tokenise() -> None:
        tp = tokenize_prompt(gpt2_bundle, "The capital of France is")
        results.append(token_texts(gpt2_bundle, tp.ids))
        results.append(single_token_id(gpt2_bundle, "The"))
        results.append(decode(gpt2_bundle, encode(gpt2_bundle, "The cat")["input_ids"]))

    worker = threading.Thread(target=tokenise)
    worker.start()
    worker.join(DEADLINE_S)  # finishes while the model lock is still held
    finished_while_held = not worker.is_alive() and gpt2_bundle.lock.locked()
    done.set()
    holder.join()
    worker.join()
    assert finished_while_held and len(results) == 3 and results[2] == "The cat"
