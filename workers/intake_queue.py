"""A reliable fetch of the intake queue on Redis: a message is moved, never popped.

kombu's Redis consumer pops a message (``BRPOP``) and records it as unacknowledged only afterwards, so
a worker killed between the two loses it; for ``certctl_notify.enqueue`` that message is the alert's
only copy. Here a relay moves a message atomically (``BLMOVE``) from the queue into a list of its own
("in progress"), and removes it from there only once the alert is committed in PostgreSQL. A relay
stamps its liveness in a sorted set every few seconds; any relay takes back, in one script, the
in-progress messages of a relay not heard of for the consumer timeout. At every instant a message is
in the queue or in exactly one in-progress list, so nothing is lost; handling one twice (a relay
thought dead that was only slow) is harmless because intake derives row ids from the message id.

The only kombu knowledge used is the layout of its messages (a JSON envelope on a list, pushed on
the left, priorities on separate keys); `tests/workers/test_intake_queue.py` pins it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import redis
from kombu.serialization import loads

#: kombu's Redis priority layout: priority 0 (the default, and the highest) on the queue's own key,
#: others rounded down to a step on "<queue>\x06\x16<step>", smaller steps first. Pinned by a test.
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
#: Where relays stamp their liveness (member: relay id, score: the Redis server's time in ms).
CONSUMERS_KEY = "certctl.intake.consumers"
#: Prefix of each relay's in-progress list.
IN_PROGRESS_PREFIX = "certctl.intake.in-progress:"

# Stamp this relay alive with the server's clock (one clock for every relay).
_BEAT = """
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
"""

# Give the in-progress messages of every relay silent for ARGV[1] ms back to the queue's consuming end
# (so they are handled next), and forget those relays. One script: two relays cannot both take them.
_RECLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
local moved = 0
for _, id in ipairs(dead) do
  local key = ARGV[2] .. id
  while redis.call('LMOVE', key, KEYS[2], 'RIGHT', 'RIGHT') do
    moved = moved + 1
  end
  redis.call('ZREM', KEYS[1], id)
end
return moved
"""

# Hand every message of this relay's in-progress list back (a clean stop) and forget the relay.
_GIVE_BACK = """
local moved = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'RIGHT') do
  moved = moved + 1
end
redis.call('ZREM', KEYS[3], ARGV[1])
return moved
"""


@dataclass(frozen=True)
class IntakeMessage:
    """One Celery task message as a producer published it."""

    task: str
    id: str
    args: list
    kwargs: dict[str, Any]


class MalformedMessage(ValueError):
    """The bytes on the queue are not a Celery task message we can read."""


def decode(raw: bytes) -> IntakeMessage:
    """Read a Celery task message (protocol 2, or protocol 1 of old producers) from kombu's envelope.

    Raises:
        MalformedMessage: naming what is wrong.
    """
    try:
        envelope = json.loads(raw)
        properties = envelope.get("properties") or {}
        body = envelope["body"]
        if properties.get("body_encoding") == "base64":
            body = base64.b64decode(body)
        payload = loads(body, envelope.get("content-type"), envelope.get("content-encoding") or "utf-8",
                        accept={"application/json"})
        headers = envelope.get("headers") or {}
        if "task" in headers:  # protocol 2: the body is [args, kwargs, embed]
            args, kwargs = payload[0], payload[1]
            return IntakeMessage(headers["task"], headers["id"], list(args), dict(kwargs))
        return IntakeMessage(payload["task"], payload["id"], list(payload.get("args") or []),
                             dict(payload.get("kwargs") or {}))
    except MalformedMessage:
        raise
    except Exception as exc:  # classified: anything unreadable is one kind of refusal
        raise MalformedMessage(f"{type(exc).__name__}: {exc}") from None


def readdressed(raw: bytes, queue: str) -> bytes:
    """The same message addressed to ``queue`` (kombu gives an unacknowledged message back to the
    queue its envelope names, so a forwarded message must name its new queue)."""
    envelope = json.loads(raw)
    info = envelope.setdefault("properties", {}).setdefault("delivery_info", {})
    info["exchange"], info["routing_key"] = "", queue
    return json.dumps(envelope).encode()


class IntakeQueue:
    """The Redis side of one relay: fetch into its in-progress list, finish, forward, beat, reclaim."""

    def __init__(self, client: redis.Redis, queue: str, relay_id: str):
        self.client = client
        self.queue = queue
        self.relay_id = relay_id
        self.in_progress = IN_PROGRESS_PREFIX + relay_id
        self._keys = [queue if step == 0 else f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS]
        self._beat = client.register_script(_BEAT)
        self._reclaim = client.register_script(_RECLAIM)
        self._give_back = client.register_script(_GIVE_BACK)

    def fetch(self, timeout: float) -> bytes | None:
        """Move the oldest message of the highest priority (kombu's order: the plain queue, then steps
        3, 6, 9) into this relay's in-progress list and return it; when every key is empty, wait up to
        ``timeout`` s on the plain queue, where every message without a priority goes (None then)."""
        for key in self._keys:
            raw = self.client.lmove(key, self.in_progress, "RIGHT", "LEFT")
            if raw is not None:
                return raw
        return self.client.blmove(self.queue, self.in_progress, timeout, "RIGHT", "LEFT")

    def finish(self, raw: bytes) -> None:
        """The message is handled (stored or refused): it leaves the in-progress list."""
        self.client.lrem(self.in_progress, 1, raw)

    def forward(self, raw: bytes, queue: str) -> None:
        """Hand a message that is not ours to handle to ``queue``, in one transaction."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.lpush(queue, readdressed(raw, queue))
            pipe.lrem(self.in_progress, 1, raw)
            pipe.execute()

    def beat(self) -> None:
        self._beat(keys=[CONSUMERS_KEY], args=[self.relay_id])

    def reclaim(self, silent_for: float) -> int:
        """Give back the in-progress messages of relays silent for ``silent_for`` s; how many moved."""
        return int(self._reclaim(keys=[CONSUMERS_KEY, self.queue], args=[int(silent_for * 1000), IN_PROGRESS_PREFIX]))

    def give_back(self) -> int:
        """On a clean stop: this relay's in-progress messages go back to the queue at once."""
        return int(self._give_back(keys=[self.in_progress, self.queue, CONSUMERS_KEY], args=[self.relay_id]))
