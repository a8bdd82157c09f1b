"""The LLM circuit breaker (SPEC §14, "LLM outage"): while the endpoint is down, runs
wait for it instead of failing. Its state lives in Redis, shared by the whole fleet.

    state     Redis (constants.LLM_*)                     a run about to ask the LLM
    closed    no breaker key                              asks
    open      breaker key, no probe key                   takes the probe key and asks (the probe)
    probing   breaker key, probe key = the probe's id     defers, or fails `llm_unavailable`
    waiting   breaker key, probe key = "wait", expiring     once its outage window is over

    the run's call ended                      the breaker                 the run
    with an answer (llm_auth and such too)    closed (if it was open)     goes on
    with an outage (LlmUnreachableError)      open; next probe in         defers, or fails once
                                              LLM_OUTAGE_PROBE_SECONDS    its window is over
    otherwise (time limit, a bug)             a probe frees the probe     as before

A deferral (`LlmOutageError`) re-publishes the task with a countdown of about
REFLECTION_LLM_OUTAGE_PROBE_SECONDS: no worker slot held, no retry counted. A run's
window is REFLECTION_LLM_OUTAGE_RETRY_HOURS from when it first met the outage (a
deferral or a failed call), kept in Redis under its reflection job id. A run past its
window still probes when the probe is free, so the breaker closes even with a window of
0. The breaker key expires on its own, so a breaker nobody probes closes in time.

The decisions (`gate`, `ended_by`, `move`, `defer_delay`) are pure; `llm_guard` does
the Redis I/O around one call.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import Enum

import redis

from reflection.constants import LLM_BREAKER_KEY, LLM_OUTAGE_SINCE_PREFIX, LLM_PROBE_KEY
from reflection.errors import (
    ContextOverflowError,
    LlmAuthError,
    LlmInvalidOutputError,
    LlmOutageError,
    LlmUnavailableError,
    LlmUnreachableError,
)
from reflection.settings import Settings

log = logging.getLogger(__name__)

WAIT = "wait"  # the probe key's value after a failed probe, until the next may go
JITTER = 0.2  # deferred runs come back spread over ± this share of the probe interval
MIN_DELAY_SECONDS = 0.5
MIN_BREAKER_TTL_SECONDS = 3600


class Gate(Enum):
    """What a run does before its LLM call."""

    CALL = "call"  # the breaker is closed
    PROBE = "probe"  # it is open and this run took the probe
    DEFER = "defer"  # it is open, another run probes: come back later
    GIVE_UP = "give_up"  # it is open and this run's window is over: fail llm_unavailable


class Ended(Enum):
    """How a run's LLM call ended, for the breaker."""

    ANSWERED = "answered"  # the endpoint answered (a refusal or a bad answer too)
    OUTAGE = "outage"  # every attempt failed: timeouts, connections, 429, 5xx
    OTHER = "other"  # the run stopped for its own reasons (its time limit, a bug)


class Move(Enum):
    """What the breaker's state does after a call."""

    STAY = "stay"
    CLOSE = "close"
    OPEN = "open"
    FREE_PROBE = "free_probe"


def gate(*, is_open: bool, got_probe: bool, waited: float, window: float) -> Gate:
    """Before the call: `got_probe` says whether this run just took the free probe key,
    `waited` how long since it first met the outage, `window` how long it may wait."""
    if not is_open:
        return Gate.CALL
    if got_probe:
        return Gate.PROBE
    return Gate.DEFER if waited < window else Gate.GIVE_UP


_ANSWERED = (LlmAuthError, LlmInvalidOutputError, ContextOverflowError)


def ended_by(error: BaseException | None) -> Ended:
    """How the call ended, from what it raised (None: it returned a decision)."""
    if error is None:
        return Ended.ANSWERED
    if isinstance(error, LlmUnreachableError):
        return Ended.OUTAGE
    if isinstance(error, (*_ANSWERED, LlmUnavailableError)):  # a request refused as such
        return Ended.ANSWERED
    return Ended.OTHER


def move(ended: Ended, *, saw_open: bool, probing: bool) -> Move:
    """The breaker's next state. A run that saw it closed and got its answer writes
    nothing (the common case costs no write); a breaker opened meanwhile closes at the
    next probe."""
    if ended is Ended.OUTAGE:
        return Move.OPEN
    if ended is Ended.ANSWERED:
        return Move.CLOSE if saw_open or probing else Move.STAY
    return Move.FREE_PROBE if probing else Move.STAY


def defer_delay(*, interval: float, left: float, max_delay: float, rng: random.Random) -> float:
    """Seconds until a deferred run asks again: about the probe interval (spread, so the
    deferred runs do not come back at once), never past its window or `max_delay`."""
    spread = interval * rng.uniform(1 - JITTER, 1 + JITTER)
    return max(MIN_DELAY_SECONDS, min(spread, left, max_delay))


def probe_lease_seconds(s: Settings) -> int:
    """How long a probe holds the probe key: the longest its call can take (every
    attempt timing out, every backoff at its longest Retry-After), within the run's
    time limit; a probe that died frees it by expiry."""
    attempts = s.llm_max_attempts
    longest = s.llm_timeout_seconds * attempts + 3 * s.llm_backoff_max_seconds * (attempts - 1)
    return math.ceil(min(longest, s.soft_time_limit)) + 5


# The Redis side.

# Deletes the probe key only if this run holds it.
_FREE_PROBE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class _State:
    """The breaker's keys, as one run sees and changes them."""

    def __init__(
        self, client: redis.Redis, s: Settings, run_id: str, clock: Callable[[], float]
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.clock = clock
        self.window = s.llm_outage_retry_hours * 3600
        self.interval = s.llm_outage_probe_seconds
        self.lease = probe_lease_seconds(s)

    def is_open(self) -> bool:
        return bool(self.client.exists(LLM_BREAKER_KEY))

    def take_probe(self) -> bool:
        return bool(self.client.set(LLM_PROBE_KEY, self.run_id, nx=True, ex=self.lease))

    def waited(self) -> float:
        """Seconds since this run first met the outage (now, if it had not)."""
        now = self.clock()
        key = LLM_OUTAGE_SINCE_PREFIX + self.run_id
        pipe = self.client.pipeline()
        pipe.set(key, repr(now), nx=True, ex=math.ceil(self.window) + 3600)
        pipe.get(key)
        since = pipe.execute()[1]
        return max(0.0, now - float(since or now))

    def apply(self, change: Move) -> None:
        if change is Move.OPEN:
            self._open()
        elif change is Move.CLOSE:
            self._close()
        elif change is Move.FREE_PROBE:
            self.client.register_script(_FREE_PROBE)(keys=[LLM_PROBE_KEY], args=[self.run_id])

    def _open(self) -> None:
        now = self.clock()
        pipe = self.client.pipeline()
        pipe.set(LLM_BREAKER_KEY, repr(now), nx=True)
        pipe.expire(LLM_BREAKER_KEY, max(MIN_BREAKER_TTL_SECONDS, math.ceil(self.window)))
        pipe.set(LLM_PROBE_KEY, WAIT, px=max(1, int(self.interval * 1000)))
        opened = pipe.execute()[0]
        if opened:
            log.warning(
                "LLM circuit breaker opened: the endpoint is unavailable; runs are deferred "
                "(one probe every %.1f s) for up to %.4g h each",
                self.interval,
                self.window / 3600,
                extra={"breaker": "open"},
            )

    def _close(self) -> None:
        pipe = self.client.pipeline()
        pipe.get(LLM_BREAKER_KEY)
        pipe.delete(LLM_BREAKER_KEY, LLM_PROBE_KEY)
        since, deleted = pipe.execute()
        if since is not None and deleted:
            log.info(
                "LLM circuit breaker closed: the endpoint answered after %.0f s",
                self.clock() - float(since),
                extra={"breaker": "closed"},
            )

    def since(self) -> str:
        """When the breaker opened, for a message (UTC), or '?'."""
        raw = self.client.get(LLM_BREAKER_KEY)
        if raw is None:
            return "?"
        return datetime.fromtimestamp(float(raw), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@contextmanager
def llm_guard(
    client: redis.Redis,
    settings: Settings,
    run_id: str,
    *,
    max_delay: float,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    seen_open: bool | None = None,
) -> Iterator[None]:
    """Around one run's LLM call: let it through, make it the probe, or raise
    `LlmOutageError` (defer) or `LlmUnavailableError` (its window is over); after the
    call, move the breaker (see the module). An outage the call itself meets is raised
    as `LlmOutageError` too while the run's window lasts. `seen_open`: whether the
    breaker was open when the run took its slot, moments ago (the same round trip;
    None: ask Redis now)."""
    state = _State(client, settings, run_id, clock)
    rng = rng or random.Random()
    saw_open = state.is_open() if seen_open is None else seen_open
    probing = saw_open and state.take_probe()
    if saw_open and not probing:
        _refuse(state, max_delay, rng)
    try:
        yield
    except Exception as e:
        _after(state, move(ended_by(e), saw_open=saw_open, probing=probing))
        if isinstance(e, LlmUnreachableError):
            _refuse(state, max_delay, rng, cause=e)
        raise
    _after(state, move(Ended.ANSWERED, saw_open=saw_open, probing=probing))


def _refuse(
    state: _State,
    max_delay: float,
    rng: random.Random,
    cause: LlmUnreachableError | None = None,
) -> None:
    """Defer the run while its window lasts, else fail it (`cause`, or a new error)."""
    waited = state.waited()
    if gate(is_open=True, got_probe=False, waited=waited, window=state.window) is Gate.DEFER:
        left = state.window - waited
        delay = defer_delay(interval=state.interval, left=left, max_delay=max_delay, rng=rng)
        message = (
            f"the LLM endpoint is unavailable (circuit breaker open since {state.since()}); "
            f"deferred {delay:.1f} s, {left / 3600:.2f} h left before llm_unavailable"
        )
        raise LlmOutageError(message, delay=delay) from cause
    if cause is not None:
        raise cause
    raise LlmUnavailableError(
        f"the LLM endpoint has been unavailable for {waited / 3600:.2f} h "
        f"(REFLECTION_LLM_OUTAGE_RETRY_HOURS={state.window / 3600:g}); "
        f"circuit breaker open since {state.since()}"
    )


def _after(state: _State, change: Move) -> None:
    """Move the breaker; a Redis error here is logged, never the run's end (the call's
    answer, or its error, matters more)."""
    try:
        state.apply(change)
    except redis.RedisError as e:
        log.warning("could not update the LLM circuit breaker (%s): %s", change.value, e)
