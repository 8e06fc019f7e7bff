"""Organisations, API keys, contractors and device tokens.

Secrets are random 256-bit tokens with a readable prefix (``ek_`` for API
keys, ``dt_`` for device tokens, ``st_`` for tracking links). Redis keeps
only their SHA-256 digests, so a copy of the database reveals no secret.
A plain digest suffices because the tokens are random, not passwords.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass

import orjson

from tracker import keys
from tracker.store import RedisClient

logger = logging.getLogger(__name__)

API_KEY_PREFIX = "ek_"
DEVICE_TOKEN_PREFIX = "dt_"
SHARE_TOKEN_PREFIX = "st_"


class OrgError(Exception):
    """Base of the errors of this module."""


class OrgExistsError(OrgError, ValueError):
    """An organisation or contractor with that id exists already."""


class NotFoundError(OrgError, LookupError):
    """No organisation, contractor or token matches."""


def hash_secret(secret: str) -> str:
    """Return the hex SHA-256 digest under which a secret is stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str) -> str:
    """Return a new random secret with ``prefix``."""
    return prefix + secrets.token_urlsafe(32)


def slugify(name: str) -> str:
    """Derive an organisation id from its name: lower case, digits and '-'."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:40].strip("-")
    if not slug:
        raise ValueError(f"name must contain a letter or digit, got {name!r}")
    return slug


@dataclass(frozen=True, slots=True)
class Org:
    """An organisation and the API key issued when it was created."""

    id: str
    name: str
    api_key: str


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """The organisation and contractor that a device token belongs to."""

    org: str
    contractor_id: str


async def create_org(client: RedisClient, name: str, org_id: str | None = None) -> Org:
    """Create an organisation with one API key.

    Raises
    ------
    OrgExistsError
        When the id is taken.
    """
    org = org_id or slugify(name)
    if not keys.ORG_PATTERN.match(org):
        raise ValueError(
            f"organisation id must be 1-40 lower-case letters, digits or '-', got {org!r}"
        )
    if not await client.sadd(keys.ORGS, org):
        raise OrgExistsError(f"organisation {org!r} exists already; choose another name")
    api_key = new_secret(API_KEY_PREFIX)
    await client.hset(keys.meta(org), mapping={"name": name, "created_at": time.time()})
    await client.set(keys.api_key(hash_secret(api_key)), org)
    logger.info("created organisation %s", org)
    return Org(org, name, api_key)


async def org_for_api_key(client: RedisClient, api_key: str) -> str | None:
    """Return the organisation id of an API key, or None."""
    org = await client.get(keys.api_key(hash_secret(api_key)))
    return org.decode() if org else None


async def create_contractor(
    client: RedisClient, org: str, contractor_id: str, name: str
) -> str:
    """Register a contractor and return its new device token.

    Raises
    ------
    OrgExistsError
        When the organisation has a contractor with that id already.
    """
    keys.check_id("id", contractor_id)
    record = orjson.dumps({"id": contractor_id, "name": name, "created_at": time.time()})
    if not await client.hsetnx(keys.contractors(org), contractor_id, record):
        raise OrgExistsError(f"contractor {contractor_id!r} exists already")
    token = new_secret(DEVICE_TOKEN_PREFIX)
    identity = orjson.dumps({"org": org, "contractor_id": contractor_id})
    await client.set(keys.device_token(hash_secret(token)), identity)
    logger.info("created contractor %s in organisation %s", contractor_id, org)
    return token


async def get_contractor(client: RedisClient, org: str, contractor_id: str) -> dict | None:
    """Return a contractor's record, or None."""
    raw = await client.hget(keys.contractors(org), contractor_id)
    return orjson.loads(raw) if raw else None


async def device_for_token(client: RedisClient, token: str) -> DeviceIdentity | None:
    """Return whom a device token belongs to, or None for an unknown token."""
    raw = await client.get(keys.device_token(hash_secret(token)))
    if not raw:
        return None
    body = orjson.loads(raw)
    return DeviceIdentity(body["org"], body["contractor_id"])
