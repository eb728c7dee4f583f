"""Events from background threads reach views on the kernel's main thread (widget state is not thread-safe)."""
import asyncio
import threading

from dcai_widgets.widgets.threads import on_main_thread


def test_calls_from_another_thread_run_on_the_loop_thread_in_order():
    seen = []

    async def kernel():
        handler = on_main_thread(lambda i: seen.append((i, threading.current_thread().name)))
        handler(0)  # same thread: runs at once
        assert seen == [(0, threading.current_thread().name)]
        workers = [threading.Thread(target=handler, args=(i,), name=f"bg{i}") for i in (1, 2)]
        for w in workers:
            w.start()
            w.join()
        assert len(seen) == 1  # not run in the background threads
        await asyncio.sleep(0.05)

    asyncio.run(kernel())
    assert [i for i, _ in seen] == [0, 1, 2]
    assert {name for _, name in seen} == {threading.main_thread().name}


def test_outside_a_kernel_it_is_a_plain_call():
    seen = []
    handler = on_main_thread(lambda: seen.append(threading.current_thread().name))
    t = threading.Thread(target=handler, name="worker")
    t.start()
    t.join()
    assert seen == ["worker"]


def test_a_failing_update_is_logged_not_raised(caplog):
    async def kernel():
        handler = on_main_thread(lambda: 1 / 0)
        t = threading.Thread(target=handler)
        t.start()
        t.join()
        await asyncio.sleep(0.05)

    asyncio.run(kernel())
    assert "widget update" in caplog.text


def test_background_merges_requests_made_while_running_into_one_more_run():
    import time as _t

    from dcai_widgets.widgets.threads import Background

    gate = threading.Event()
    seen, done = [], []

    def work(job):
        seen.append(len(seen))
        if len(seen) == 1:
            gate.wait(5)
        return len(seen)

    bg = Background(work, on_done=done.append, name="t")
    bg.request()
    _t.sleep(0.05)
    for _ in range(5):  # while the first run waits: merged into exactly one more run
        bg.request()
    gate.set()
    assert bg.wait(5)
    assert seen == [0, 1] and done == [1, 2] and bg.runs == 2


def test_background_cancel_stops_work_and_drops_the_result():
    from dcai_widgets.widgets.threads import Background

    started, done = threading.Event(), []

    def work(job):
        started.set()
        for _ in range(500):
            job.check()
            threading.Event().wait(0.01)
        return "finished"

    bg = Background(work, on_done=done.append)
    bg.request()
    started.wait(5)
    bg.cancel()
    assert bg.wait(5)
    assert done == [] and bg.runs == 0


def test_background_errors_go_to_on_error_on_the_main_thread():
    from dcai_widgets.widgets.threads import Background

    errors = []

    async def kernel():
        bg = Background(lambda job: 1 / 0, on_error=lambda e: errors.append(
            (type(e).__name__, threading.current_thread().name)))
        bg.request()
        bg.wait(5)
        await asyncio.sleep(0.05)

    asyncio.run(kernel())
    assert errors == [("ZeroDivisionError", threading.main_thread().name)]


def test_background_false_runs_in_the_caller():
    from dcai_widgets.widgets.threads import Background

    done = []
    Background(lambda job: threading.current_thread().name, on_done=done.append, background=False).request()
    assert done == [threading.current_thread().name]


def test_background_request_while_the_worker_is_exiting_is_not_lost():
    """A request landing after the worker decided to stop, while its thread is still alive, must run."""
    from dcai_widgets.widgets.threads import Background

    runs = []
    bg = Background(lambda job: runs.append(1))
    real_loop = bg._loop
    exited = threading.Event()
    resume = threading.Event()

    def slow_exit():   # the worker stops deciding, then lingers alive before its thread ends
        real_loop()
        exited.set()
        resume.wait(5)

    bg._loop = slow_exit
    bg.request()
    assert exited.wait(5)
    bg._loop = real_loop
    bg.request()             # the old thread is still alive here
    resume.set()
    assert bg.wait(5)
    deadline = __import__("time").monotonic() + 5
    while len(runs) < 2 and __import__("time").monotonic() < deadline:
        threading.Event().wait(0.01)
    assert len(runs) == 2
