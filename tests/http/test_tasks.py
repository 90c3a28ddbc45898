"""roost.http.tasks.Task: a handler's coroutine driven without inlineCallbacks."""

from __future__ import annotations

import contextvars
from collections.abc import Generator
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.trial import unittest

from roost.http.tasks import Task, Wakeup

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="outside")


class _Odd:
    """An awaitable that yields something other than a Deferred."""

    def __await__(self) -> Generator[Any, None, None]:
        yield "not a deferred"


class TaskTests(unittest.TestCase):
    make: Any = defer.Deferred  # what the handlers await

    def setUp(self) -> None:
        self.errors: list[Failure] = []
        self.seen: list[Any] = []

    def test_runs_through_without_suspending(self) -> None:
        async def handler() -> None:
            self.seen.append(await defer.succeed(1))

            async def inner() -> int:
                return 2

            self.seen.append(await inner())

        task = Task(handler(), self.errors.append)
        self.assertTrue(task.done)
        self.assertEqual(self.seen, [1, 2])
        self.assertEqual(self.errors, [])

    def test_resumes_with_the_result(self) -> None:
        waited: defer.Deferred[int] = self.make()
        later: defer.Deferred[str] = self.make()

        async def handler() -> None:
            self.seen.append(await waited)
            self.seen.append(await later)

        task = Task(handler(), self.errors.append)
        self.assertFalse(task.done)
        waited.callback(5)
        self.assertEqual(self.seen, [5])
        self.assertFalse(task.done)
        later.callback("x")
        self.assertEqual(self.seen, [5, "x"])
        self.assertTrue(task.done)
        self.assertEqual(self.errors, [])

    def test_a_failure_is_raised_in_the_handler(self) -> None:
        waited: defer.Deferred[int] = self.make()

        async def handler() -> None:
            try:
                await waited
            except ValueError as e:
                self.seen.append(str(e))

        Task(handler(), self.errors.append)
        waited.errback(ValueError("bad"))
        self.assertEqual(self.seen, ["bad"])
        self.assertEqual(self.errors, [])

    def test_an_escaping_exception_goes_to_on_error(self) -> None:
        waited: defer.Deferred[int] = self.make()

        async def handler() -> None:
            await waited
            raise KeyError("gone")

        task = Task(handler(), self.errors.append)
        waited.callback(1)
        self.assertTrue(task.done)
        self.assertEqual(len(self.errors), 1)
        self.assertTrue(self.errors[0].check(KeyError))

    def test_cancel_cancels_the_awaited_deferred(self) -> None:
        cancelled: list[defer.Deferred[int]] = []
        waited: defer.Deferred[int] = self.make(cancelled.append)

        async def handler() -> None:
            try:
                await waited
            except defer.CancelledError:
                self.seen.append("cancelled")

        task = Task(handler(), self.errors.append)
        task.cancel()
        self.assertEqual(cancelled, [waited])
        self.assertEqual(self.seen, ["cancelled"])
        self.assertTrue(task.done)
        task.cancel()  # nothing left to cancel
        self.assertEqual(self.errors, [])

    def test_cancel_when_done_does_nothing(self) -> None:
        async def handler() -> None:
            self.seen.append(1)

        task = Task(handler(), self.errors.append)
        task.cancel()
        self.assertEqual(self.seen, [1])

    def test_context_is_the_task_s_own(self) -> None:
        waited: defer.Deferred[int] = self.make()

        async def handler() -> None:
            var.set("inside")
            await waited
            self.seen.append(var.get())

        Task(handler(), self.errors.append)
        self.assertEqual(var.get(), "outside")  # not leaked into the caller
        waited.callback(1)
        self.assertEqual(self.seen, ["inside"])  # kept across the suspension
        self.assertEqual(var.get(), "outside")

    def test_other_awaitables_are_refused_in_the_handler(self) -> None:
        async def handler() -> None:
            try:
                await _Odd()
            except TypeError:
                self.seen.append("refused")

        task = Task(handler(), self.errors.append)
        self.assertEqual(self.seen, ["refused"])
        self.assertTrue(task.done)


class WakeupTaskTests(TaskTests):
    """The same with Wakeups, which a waiting Task is resumed by directly."""

    make = Wakeup

    def test_a_task_alone_is_resumed_without_the_callback_chain(self) -> None:
        waited: Wakeup = Wakeup()

        async def handler() -> None:
            self.seen.append(await waited)

        Task(handler(), self.errors.append)
        chains: list[object] = []
        self.patch(Wakeup, "_runCallbacks", lambda d: chains.append(d))
        waited.callback(3)
        self.assertEqual((self.seen, chains, waited.called, waited.result), ([3], [], True, None))

    def test_callbacks_added_while_waiting_run_after_the_task_as_with_a_deferred(self) -> None:
        for make in (defer.Deferred, Wakeup):
            seen: list[Any] = []
            waited = make()

            async def handler(waited: Any = waited, seen: list[Any] = seen) -> None:
                seen.append(("task", await waited))

            Task(handler(), self.errors.append)
            waited.addCallback(lambda r, seen=seen: seen.append(("after", r)))
            waited.callback(4)
            self.assertEqual(seen, [("task", 4), ("after", None)], make)

    def test_a_paused_wakeup_resumes_the_task_when_unpaused(self) -> None:
        waited: Wakeup = Wakeup()

        async def handler() -> None:
            self.seen.append(await waited)

        Task(handler(), self.errors.append)
        waited.pause()
        waited.callback(5)
        self.assertEqual(self.seen, [])
        waited.unpause()
        self.assertEqual(self.seen, [5])

    def test_a_wakeup_is_a_deferred_elsewhere(self) -> None:
        waited: Wakeup = Wakeup()

        async def handler() -> int:
            return await waited + 1

        d = defer.ensureDeferred(handler())  # inlineCallbacks, not a Task
        waited.callback(1)
        self.assertEqual(self.successResultOf(d), 2)
        plain: Wakeup = Wakeup()
        plain.callback(6)
        self.assertEqual(self.successResultOf(plain), 6)
        self.assertRaises(defer.AlreadyCalledError, plain.callback, 7)

    def test_firing_twice_raises_as_a_deferred_does(self) -> None:
        waited: Wakeup = Wakeup()

        async def handler() -> None:
            self.seen.append(await waited)

        Task(handler(), self.errors.append)
        waited.callback(1)
        self.assertRaises(defer.AlreadyCalledError, waited.callback, 2)
        self.assertRaises(defer.AlreadyCalledError, waited.errback, ValueError())
        self.assertEqual(self.seen, [1])


class ResourceCancelTests(unittest.TestCase):
    """JsonResource runs each handler as a Task: a client gone before the answer cancels
    what the handler waits on, and the request log sees the cancellation."""

    def _connection(self, handler: Any) -> tuple[Any, Any]:
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        from roost.client_api.resource import JsonResource, RoostSite, Router

        router = Router()
        router.add("GET", "/_matrix/client/v3/wait", handler, auth=False)
        site = RoostSite(JsonResource(router, None), 1024 * 1024)
        proto = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                                    hostAddress=IPv4Address("TCP", "127.0.0.1", 8008))
        proto.makeConnection(transport)
        return proto, transport

    def test_a_client_gone_cancels_the_handler_s_wait(self) -> None:
        cancelled: list[object] = []
        outcome: list[str] = []

        async def handler(api: Any) -> dict[str, Any]:
            try:
                await defer.Deferred(cancelled.append)
            except defer.CancelledError:
                outcome.append("cancelled")
                raise
            return {}

        proto, transport = self._connection(handler)
        proto.dataReceived(b"GET /_matrix/client/v3/wait HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual((cancelled, outcome, transport.value()), ([], [], b""))
        from twisted.internet.error import ConnectionDone
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(cancelled), 1)
        self.assertEqual(outcome, ["cancelled"])

    def test_an_answer_after_a_wait_is_written(self) -> None:
        waited: defer.Deferred[int] = defer.Deferred()

        async def handler(api: Any) -> dict[str, Any]:
            return {"n": await waited}

        proto, transport = self._connection(handler)
        proto.dataReceived(b"GET /_matrix/client/v3/wait HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(transport.value(), b"")
        waited.callback(7)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(transport.value().endswith(b'\r\n\r\n{"n":7}'))
        from twisted.internet.error import ConnectionDone
        proto.connectionLost(Failure(ConnectionDone()))  # stops the idle timer
