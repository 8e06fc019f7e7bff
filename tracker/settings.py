"""Settings of an enroute process, read once from flags and ``ENROUTE_*`` variables.

Every knob lives here with its type, unit and default. Command-line flags
override environment variables, which override the defaults below.

=========================  ==========================  ===========================
variable                   default                     meaning
=========================  ==========================  ===========================
ENROUTE_REDIS_URL          (unset: embedded server)    external Redis URL
ENROUTE_DATA_DIR           ./.enroute                  embedded Redis socket, AOF
ENROUTE_GRAPH              (bundled Helsinki extract)  road graph source
ENROUTE_GRAPH_CACHE_DIR    (beside the source)         compiled graph cache
ENROUTE_HOST               127.0.0.1                   HTTP bind address
ENROUTE_PORT               8000                        HTTP port
ENROUTE_WORKERS            1                           server processes
ENROUTE_PUBLIC_URL         http://HOST:PORT            base of printed links
ENROUTE_H3_RES             9                           position cell resolution
ENROUTE_HISTORY_DAYS       7                           ping history retention
ENROUTE_MAX_FUTURE_S       60                          fix-time tolerance ahead
ENROUTE_MAX_SPEED_MPS      70                          jump filter speed limit
ENROUTE_INGEST_RETRY_S     30                          store retry before error
ENROUTE_TILE_URL           OpenStreetMap tiles         map tile template
ENROUTE_SHARE_TTL_S        86400                       tracking link lifetime
ENROUTE_VIEWER_STALL_S     30                          unsent time before a viewer is closed
ENROUTE_GEOFENCE_DWELL_S   30                          inside time before arrival
ENROUTE_GEOFENCE_MIN_ON_SITE_S 180                     shortest visit that completes
ENROUTE_GEOFENCE_GRACE_S   300                         outside time before departure
ENROUTE_GEOFENCE_MAX_ACCURACY_M 100                    worse fixes drive no transition
ENROUTE_ETA_MIN_INTERVAL_S 1                           fix time between two ETA refreshes of a job
=========================  ==========================  ===========================
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.connection import URL_QUERY_ARGUMENT_PARSERS, parse_url

#: Map tiles for the web pages; the pages draw the graph's streets when these fail.
DEFAULT_TILE_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"


class Settings(BaseSettings):
    """Process-wide settings; build one with :func:`load_settings`."""

    # Infinity and NaN are rejected everywhere: an infinite interval or
    # lifetime would switch a feature off without a word.
    model_config = SettingsConfigDict(env_prefix="ENROUTE_", extra="ignore", allow_inf_nan=False)

    redis_url: str | None = None
    data_dir: Path = Path(".enroute")
    graph: str | None = None
    graph_cache_dir: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    public_url: str | None = None

    h3_res: int = Field(default=9, ge=5, le=12)
    history_days: float = Field(default=7.0, gt=0)
    max_future_s: float = Field(default=60.0, ge=0, le=86400)
    max_speed_mps: float = Field(default=70.0, gt=0)
    ingest_retry_s: float = Field(default=30.0, ge=0)
    tile_url: str = DEFAULT_TILE_URL
    share_ttl_s: float = Field(default=86400.0, gt=0)
    viewer_stall_s: float = Field(default=30.0, gt=0)

    # Geofence detection thresholds; see geofence.detection.DetectionConfig.
    geofence_dwell_s: float = Field(default=30.0, ge=0)
    geofence_min_on_site_s: float = Field(default=180.0, ge=0)
    geofence_grace_s: float = Field(default=300.0, ge=0)
    geofence_max_accuracy_m: float = Field(default=100.0, gt=0)

    # A ping refreshes a job's ETA only when its fix time is at least this
    # many seconds (less a tenth) after that of the ping behind the last ETA.
    eta_min_interval_s: float = Field(default=1.0, ge=0)

    # Advice sent to devices in every ack, seconds between pings.
    interval_near_s: float = Field(default=5.0, gt=0)
    interval_moving_s: float = Field(default=10.0, gt=0)
    interval_idle_s: float = Field(default=60.0, gt=0)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        """Reject a Redis URL that redis-py can't connect to, before any server starts; empty means unset."""
        if not value:
            return None
        if not value.startswith(REDIS_SCHEMES):
            raise ValueError(f"be a URL that starts with {', '.join(REDIS_SCHEMES)}")
        try:
            query = dict(parse_qsl(urlsplit(value).query, keep_blank_values=True))
        except ValueError as error:
            raise ValueError(f"be a valid Redis URL ({error})") from None
        cluster = query.pop("cluster", None)
        if cluster not in (None, "true"):
            raise ValueError(f"have cluster=true or no cluster option, not cluster={cluster}")
        unknown = sorted(set(query) - set(URL_QUERY_ARGUMENT_PARSERS))
        if unknown:
            raise ValueError(
                f"have only these options: cluster, {', '.join(sorted(URL_QUERY_ARGUMENT_PARSERS))}; "
                f"not {', '.join(unknown)}"
            )
        try:
            parse_url(cluster_url_parts(value)[1])
        except ValueError as error:
            raise ValueError(f"be a valid Redis URL ({error})") from None
        return value

    @field_validator("*", mode="before")
    @classmethod
    def _plain_number(cls, value: Any, info: ValidationInfo) -> Any:
        """Reject numbers written with underscores or rounding to 0 from a nonzero value, which float() accepts."""
        if not isinstance(value, str) or info.field_name is None:
            return value
        annotation = cls.model_fields[info.field_name].annotation
        if annotation not in (int, float):
            return value
        if "_" in value:
            raise ValueError("be a number without underscores")
        if annotation is float and _NONZERO_DIGIT.search(value.split("e")[0].split("E")[0]):
            try:
                rounds_to_zero = float(value) == 0.0
            except ValueError:
                return value  # pydantic reports it as not a number
            if rounds_to_zero:
                raise ValueError("be 0 or a number that does not round to 0")
        return value

    @property
    def history_s(self) -> float:
        """Ping history retention in seconds."""
        return self.history_days * 86400.0

    def base_url(self) -> str:
        """Return the URL printed in links, without a trailing slash."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.host}:{self.port}"


def cluster_url_parts(url: str) -> tuple[bool, str]:
    """Return whether a Redis URL names a cluster, and the URL without the cluster marks.

    A URL names a cluster when its query string has ``cluster=true`` or its
    scheme is ``redis+cluster`` or ``rediss+cluster``.
    """
    is_cluster = "cluster=true" in url or url.startswith(("redis+cluster", "rediss+cluster"))
    if not is_cluster:
        return False, url
    return True, url.replace("+cluster", "").replace("cluster=true", "").rstrip("?&")


_NONZERO_DIGIT = re.compile(r"[1-9]")
#: The schemes redis-py accepts; ``?cluster=true`` selects the cluster client.
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")

# Longer invalid values are cut short in error messages.
MAX_SHOWN_CHARS = 60


class SettingsError(ValueError):
    """A flag or ``ENROUTE_*`` variable with an invalid value."""


def load_settings(**overrides: object) -> Settings:
    """Read the environment once and apply flag values that are not None.

    Raises
    ------
    SettingsError
        Naming each invalid flag or variable, its value and the rule.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValidationError as error:
        problems = []
        for item in error.errors():
            name = str(item["loc"][0]) if item["loc"] else "settings"
            source = "--" + name.replace("_", "-") if name in given else "ENROUTE_" + name.upper()
            rule = item["msg"].removeprefix("Input should ").removeprefix("Value error, ")
            value_text = repr(item["input"])
            if len(value_text) > MAX_SHOWN_CHARS:
                value_text = value_text[: MAX_SHOWN_CHARS - 3] + "..."
            problems.append(f"{source} is invalid: the value should {rule}, got {value_text}")
        raise SettingsError("; ".join(problems)) from None
