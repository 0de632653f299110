"""Dynamic batching: one model thread serves the items of all concurrent requests.

A forward pass over 32 items costs little more than over one, so items from concurrent requests
are pooled: every item is a :class:`Job` in one bounded queue, and a single worker thread (the
only thread that touches the model and its tokenizer, which are not safe to share) runs a batch
as soon as ``max_batch_size`` compatible items wait, or ``max_wait_ms`` after the oldest arrived.
The server's default ``max_wait_ms`` is 0: a batch starts whenever the worker is free, and while
it runs the next one fills from what arrives (waiting longer only adds latency at low load).
Compatible means the same :func:`~lcoemb.inputs.inspect_item` group (modality, so that padding is
shared by like inputs), instruction and ``dimensions``, since one :meth:`OmniEncoder.encode` call
takes one of each. Each batch is encoded with ``on_error``, so one undecodable item fails only
its own job, and through it its own request.

Each job carries a :class:`concurrent.futures.Future`; a request that goes away cancels its
futures and the worker skips them. A full queue refuses a whole request at once
(:class:`QueueFull`) rather than part of it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from lcoemb.encoder import OmniEncoder
from lcoemb.inputs import InputError, RawItem


class QueueFull(Exception):
    """The queue cannot take a request's items now; the client should retry later."""


class Closed(Exception):
    """The batcher is shutting down and takes no new work."""


@dataclass(frozen=True)
class Embedded:
    """One item's result: its vector and the number of text tokens it held (for ``usage``)."""

    vector: np.ndarray
    tokens: int


@dataclass
class Job:
    """One item waiting for the model, with what decides which batch it may join."""

    item: RawItem
    group: str
    texts: list[str]
    instruction: str | None
    dimensions: int | None
    future: Future[Embedded] = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple[str, str | None, int | None]:
        return self.group, self.instruction, self.dimensions


class Batcher:
    """The queue and its worker thread; ``on_batch(size)`` and ``on_depth(depth)`` feed metrics."""

    def __init__(
        self,
        encoder: OmniEncoder,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        on_batch: Callable[[int], None] = lambda size: None,
        on_depth: Callable[[int], None] = lambda depth: None,
    ):
        self.encoder = encoder
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.on_depth = on_depth
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._flushing = False
        self._thread = threading.Thread(target=self._run, name="lcoemb-batcher", daemon=True)
        self._thread.start()

    def submit(self, jobs: Sequence[Job]) -> None:
        """Queue all of ``jobs`` or none of them."""
        with self._cond:
            if self._closed:
                raise Closed
            if len(self._jobs) + len(jobs) > self.max_queue:
                raise QueueFull
            self._jobs.extend(jobs)
            self.on_depth(len(self._jobs))
            self._cond.notify()

    def flush(self) -> None:
        """Run queued jobs as soon as the worker is free instead of waiting for fuller batches:
        on shutdown nothing more is coming, so waiting out ``max_wait_ms`` only delays it."""
        with self._cond:
            self._flushing = True
            self._cond.notify()

    def close(self) -> None:
        """Refuse new work, let the worker finish every queued job, and wait for it."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _next_batch(self) -> list[Job] | None:
        """Wait for a batch that is full or whose oldest job has waited long enough; ``None``
        once closed and drained."""
        with self._cond:
            while True:
                if not self._jobs:
                    if self._closed:
                        return None
                    self._cond.wait()
                    continue
                key = self._jobs[0].key
                same = [job for job in self._jobs if job.key == key]
                left = self._jobs[0].arrived + self.max_wait - time.monotonic()
                waiting = not (self._closed or self._flushing)
                if len(same) < self.max_batch_size and left > 0 and waiting:
                    self._cond.wait(left)
                    continue
                batch = same[: self.max_batch_size]
                taken = set(map(id, batch))
                self._jobs = deque(job for job in self._jobs if id(job) not in taken)
                self.on_depth(len(self._jobs))
                # a cancelled future (its client went away) is dropped here, unencoded
                return [job for job in batch if job.future.set_running_or_notify_cancel()]

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            if batch:
                self._encode(batch)

    def _encode(self, batch: list[Job]) -> None:
        errors: dict[int, InputError] = {}
        try:
            vectors = self.encoder.encode(
                [job.item for job in batch],
                batch_size=len(batch),
                instruction=batch[0].instruction,
                dimensions=batch[0].dimensions,
                on_error=lambda i, error: errors.__setitem__(i, error),
            )
            self.on_batch(len(batch))
            tokenizer = self.encoder.backbone.tokenizer
            for i, job in enumerate(batch):
                if i in errors:
                    job.future.set_exception(errors[i])
                else:
                    tokens = sum(len(tokenizer(text).input_ids) for text in job.texts)
                    job.future.set_result(Embedded(vectors[i], tokens))
        except Exception as error:  # the model itself failed: every job of the batch learns it
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(error)
