"""Logging set-up: stdlib logging, with Twisted's own log routed into it."""

from __future__ import annotations

import logging
import sys

from twisted.logger import STDLibLogObserver, globalLogBeginner

from roost.homeserver.config import LoggingConfig


def setup_logging(config: LoggingConfig, path_resolver=lambda p: p) -> None:  # noqa: ANN001
    handler: logging.Handler
    if config.file:
        handler = logging.FileHandler(path_resolver(config.file))
    else:
        handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level.upper())
    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)
