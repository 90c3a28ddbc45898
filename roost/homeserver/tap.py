"""twistd integration: `twistd -n roost -c homeserver.yaml`."""

from __future__ import annotations

import sys

from twisted.application.service import IService
from twisted.python import usage

from roost.homeserver.config import ConfigError, load_config


class Options(usage.Options):
    optParameters = [
        ["config", "c", "homeserver.yaml", "Path to the configuration file."],
        ["worker", None, None, "Run as this instance of the configuration's workers.instances."],
    ]


def makeService(options: Options) -> IService:
    from roost.homeserver import nvx
    from roost.homeserver.memory import (
        skip_http2,
        trim_periodically,
        tune_allocator,
        tune_collector_after_start,
    )

    skip_http2()  # before the server's modules import twisted.web
    nvx.install()  # before the WebSocket code imports autobahn
    from twisted.internet import reactor

    from roost.homeserver.logsetup import setup_logging
    from roost.homeserver.service import RoostService

    try:
        config = load_config(options["config"]).for_worker(options["worker"])
    except ConfigError as e:
        sys.stderr.write(f"roost: configuration error: {e}\n")
        raise SystemExit(1) from None
    setup_logging(config.logging, config.path)
    tune_allocator()  # before the database pool starts its threads
    service = RoostService(config, reactor)
    tune_collector_after_start(service.started)
    trim_periodically(service.started, reactor)
    return service
