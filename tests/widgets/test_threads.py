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
