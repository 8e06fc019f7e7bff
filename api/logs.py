"""Logging setup of the command line and the server, with secrets redacted.

Browsers can't send headers on a WebSocket, so the dispatcher's API key
and the customer's share token travel in the URL, and uvicorn logs every
WebSocket URL. :class:`RedactSecrets` masks them in every record before a
handler writes it.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

_SECRET_PATTERNS = (
    (re.compile(r"(token=)[^&\s\"']+"), r"\1***"),
    (re.compile(r"\b(ek|dt|st|whsec)_[A-Za-z0-9_-]{8,}"), r"\1_***"),
)
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def redact(text: str) -> str:
    """Mask API keys, device tokens and share tokens in ``text``."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Rewrite each record's message with its secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def log_config(level: str = "INFO") -> dict[str, Any]:
    """Return a ``logging.config.dictConfig`` mapping for enroute and uvicorn."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": "api.logs.RedactSecrets"}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
    config["formatters"]["plain"] = {"format": FORMAT}
    config["handlers"]["plain"] = {
        "class": "logging.StreamHandler",
        "formatter": "plain",
        "stream": "ext://sys.stderr",
        "filters": ["redact"],
    }
    config["root"] = {"handlers": ["plain"], "level": level.upper()}
    for logger_config in config["loggers"].values():
        logger_config["level"] = level.upper()
    return config
