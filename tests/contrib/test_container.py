"""contrib/container/Containerfile: built and started wherever a container engine can run
containers, answering /health from inside the container.

Here (and in CI) the engine is often missing or not allowed to run containers
(no base image, which the test never pulls, or an OCI runtime the sandbox refuses):
then the test skips and says why. Any other build or start failure fails it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import uuid

import treq
from twisted.internet import reactor, task, threads
from twisted.trial.unittest import SkipTest, TestCase

BASE_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Failures that say the environment cannot run containers, not that the image is wrong.
_ENVIRONMENT = ("OCI permission denied", "Cannot connect to the Docker daemon",
                "pinging container registry", "dial tcp", "no such host",
                "failed to resolve", "permission denied while trying to connect",
                "Error: initializing source", "i/o timeout")


def _engine() -> str | None:
    for name in ("podman", "docker"):
        path = shutil.which(name)
        if path and subprocess.run([path, "info"], capture_output=True,
                                   timeout=60).returncode == 0:
            return path
    return None


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def _skip_or_fail(testcase: TestCase, what: str, result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    if any(marker in output for marker in _ENVIRONMENT):
        raise SkipTest(f"containers cannot {what} here: {output.strip().splitlines()[-1]}")
    testcase.fail(f"{what} failed:\n{output[-3000:]}")


class ContainerImageTests(TestCase):
    timeout = 1800

    async def test_the_image_builds_and_serves_health(self) -> None:
        engine = await threads.deferToThread(_engine)
        if engine is None:
            raise SkipTest("no container engine (podman or docker) answers here")
        # Never pulled by the test (tests reach nothing but loopback and package registries):
        # an operator pulls the base image once, then this test can build on it.
        present = await threads.deferToThread(_run, [engine, "image", "inspect", BASE_IMAGE], 60)
        if present.returncode != 0:
            raise SkipTest(f"the base image {BASE_IMAGE} is not present locally"
                           f" (`{os.path.basename(engine)} pull {BASE_IMAGE}` first)")
        tag = f"roost-test-{uuid.uuid4().hex[:8]}"
        built = await threads.deferToThread(
            _run, [engine, "build", "--pull=never", "-f",
                   os.path.join(REPO, "contrib", "container", "Containerfile"), "-t", tag,
                   REPO], 1500)
        if built.returncode != 0:
            _skip_or_fail(self, "build an image", built)
        self.addCleanup(lambda: subprocess.run([engine, "rmi", "-f", tag], capture_output=True))
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        with open(os.path.join(folder, "homeserver.yaml"), "w") as f:
            f.write("server_name: container.test\ndata_dir: /data\n"
                    "listeners: {client: {bind_address: 0.0.0.0, port: 8008}}\n")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        name = f"{tag}-run"
        started = await threads.deferToThread(
            _run, [engine, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8008",
                   "-v", f"{folder}/homeserver.yaml:/config/homeserver.yaml:ro", tag], 120)
        if started.returncode != 0:
            _skip_or_fail(self, "run a container", started)
        self.addCleanup(lambda: subprocess.run([engine, "rm", "-f", name], capture_output=True))
        for _ in range(300):
            try:
                resp = await treq.get(f"http://127.0.0.1:{port}/health")
                body = json.loads(await resp.content())
                self.assertEqual((resp.code, body["status"]), (200, "ok"))
                return
            except (ConnectionError, OSError, ValueError):
                await task.deferLater(reactor, 0.5, lambda: None)
        logs = await threads.deferToThread(_run, [engine, "logs", name], 60)
        self.fail(f"the container never answered /health:\n{logs.stdout[-3000:]}"
                  f"{logs.stderr[-3000:]}")
