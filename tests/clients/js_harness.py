"""Run a matrix-js-sdk scenario (a node script under tests/js) against a real Roost.

The test starts Roost with tests/server_harness.py, then calls `run_js`; node runs
the script as a child process while the reactor keeps serving Roost, and the
script's JSON result comes back as a dict. The node packages are pinned in
tests/js/package-lock.json and installed by `make test` (`npm ci`; a direct trial
run installs them itself the first time). Without a `node` on PATH the test is
skipped with that reason.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, utils
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

JS_DIR = Path(__file__).resolve().parent.parent / "js"

# Long enough for a whole client start and a few sync rounds on a loaded machine;
# only a guard against a stuck child, never an assertion about speed.
DEFAULT_GUARD_SECONDS = 240.0


def node_or_skip() -> str:
    """The path of `node`, or skip the test: these tests need Node.js 20 or newer."""
    node = shutil.which("node")
    if node is None:
        raise SkipTest("node is not on PATH: the matrix-js-sdk tests need Node.js 20+")
    return node


class _Collect(ProcessProtocol):
    """Keeps the child's output and fires `ended` with its exit code."""

    def __init__(self) -> None:
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.ended: defer.Deferred[int | None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        self.stdout += data

    def errReceived(self, data: bytes) -> None:  # noqa: N802
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:  # noqa: N802
        if reason.check(ProcessDone):
            self.ended.callback(0)
        elif reason.check(ProcessTerminated):
            self.ended.callback(reason.value.exitCode)
        else:
            self.ended.callback(None)


class JsRun:
    """What one node run gave: its JSON result, exit code and output (for messages)."""

    def __init__(self, result: dict[str, Any], code: int | None, stdout: str, stderr: str):
        self.result = result
        self.code = code
        self.stdout = stdout
        self.stderr = stderr

    def step(self, name: str) -> Any:
        """The value of a step the script ran with `step(...)`; fails naming its error."""
        steps = self.result.get("steps", {})
        if name not in steps:
            failed = {n: _short(o["error"]) for n, o in steps.items() if not o["ok"]}
            raise AssertionError(f"step {name!r} was not reached; failed before it: {failed}")
        outcome = steps[name]
        if not outcome["ok"]:
            raise AssertionError(f"step {name!r} failed: {_short(outcome['error'])}")
        return outcome["value"]

    def explain(self) -> str:
        tail = self.stderr[-3000:]
        return f"result={json.dumps(self.result)[:3000]} exit={self.code} stderr tail:\n{tail}"


async def _install_packages(testcase: TestCase) -> None:
    """`npm ci` in tests/js when `make test` has not run it (a direct trial run).

    Under `trial -j` several workers may get here at once: `flock` lets one install
    while the others wait, and they find the packages there when it is their turn.
    """
    # The stamp, not the package directory: that exists while another worker's `npm ci`
    # is still unpacking it. `make test` writes the same stamp.
    if (JS_DIR / "node_modules" / ".installed").is_file():
        return
    npm, flock = shutil.which("npm"), shutil.which("flock")
    if npm is None or flock is None:
        testcase.fail("tests/js/node_modules is missing: run `make test` or `cd tests/js && npm ci`")
    script = ("test -f node_modules/.installed || "
              f"{npm} ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed")
    out, err, code = await utils.getProcessOutputAndValue(
        flock, [str(JS_DIR / ".npm-ci.lock"), "sh", "-c", script], env=dict(os.environ),
        path=str(JS_DIR))
    if code != 0:
        testcase.fail(f"`npm ci` in tests/js failed ({code}): {err.decode(errors='replace')[-2000:]}")


def _short(error: dict[str, Any]) -> str:
    """A step's error without its stack: what the SDK said, status and errcode."""
    return json.dumps({k: v for k, v in error.items() if k != "stack"})[:1500]


async def run_js(
    testcase: TestCase,
    script: str,
    params: dict[str, Any],
    guard_seconds: float = DEFAULT_GUARD_SECONDS,
    allow_error: bool = False,
) -> JsRun:
    """Run tests/js/`script` with `params` (JSON; `base_url` names the server).

    The test fails if the script threw (its `error` and stderr in the message)
    unless `allow_error`, or if it wrote no result.
    """
    node = node_or_skip()
    await _install_packages(testcase)
    result_path = Path(testcase.mktemp() + ".json").resolve()
    env = {
        **os.environ,
        "ROOST_JS_PARAMS": json.dumps(params),
        "ROOST_JS_RESULT": str(result_path),
    }
    proto = _Collect()
    process = reactor.spawnProcess(
        proto, node, [node, str(JS_DIR / script)], env=env, path=str(JS_DIR)
    )
    timed_out = []

    def kill() -> None:
        timed_out.append(True)
        try:
            process.signalProcess(signal.SIGKILL)
        except Exception:  # already gone
            pass

    guard = reactor.callLater(guard_seconds, kill)
    code = await proto.ended
    if guard.active():
        guard.cancel()
    stdout = proto.stdout.decode(errors="replace")
    stderr = proto.stderr.decode(errors="replace")
    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError):
        result = {}
    run = JsRun(result, code, stdout, stderr)
    if timed_out:
        testcase.fail(f"{script} was stopped after {guard_seconds:.0f}s; {run.explain()}")
    if not result:
        testcase.fail(f"{script} wrote no result; {run.explain()}")
    if "error" in result and not allow_error:
        testcase.fail(f"{script} failed: {run.explain()}")
    return run
