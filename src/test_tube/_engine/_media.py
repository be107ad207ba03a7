"""Image encoding off the training loop.

``log()`` copies the pixels and calls :meth:`MediaEncoder.submit`; a small
pool of daemon threads encodes them with imageio (Pillow releases the GIL
while it compresses) and publishes each file under a temporary name first, so
no file in ``media/`` is ever seen half-written.  The pool starts with the
first image, so a run without images starts no extra thread.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any

from .._store import _layout
from ._priority import lower_this_thread
from ._rows import Image

_STOP = object()


class MediaEncoder:
    """Encodes submitted images into ``media_dir`` with up to ``workers`` threads."""

    def __init__(
        self,
        media_dir: str,
        *,
        workers: int,
        jpeg_quality: int,
        on_done: Callable[[int], None],
    ) -> None:
        self.media_dir = media_dir
        self.workers = workers
        self.jpeg_quality = jpeg_quality
        self._on_done = on_done
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._errors: list[BaseException] = []
        self._imwrite: Callable[..., Any] | None = None

    def submit(self, relpath: str, image: Image) -> None:
        """Queue one image; never blocks, never touches the disk, never imports."""
        with self._lock:
            self._in_flight += 1
            if len(self._threads) < self.workers:
                self._start_thread()
        self._jobs.put((relpath, image))

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"test_tube-media-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        lower_this_thread()
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            relpath, image = job
            try:
                self._encode(relpath, image)
            except BaseException as exc:  # surfaced on the next call; the pool keeps working
                with self._lock:
                    self._errors.append(exc)
            finally:
                self._on_done(image.pixels.nbytes)
                with self._lock:
                    self._in_flight -= 1
                    if self._in_flight == 0:
                        self._idle.notify_all()

    def _encode(self, relpath: str, image: Image) -> None:
        path = os.path.join(self.media_dir, os.path.basename(relpath))
        tmp = _layout.temp_path(path)
        options: dict[str, Any] = {"extension": "." + image.ext}
        if image.ext != "png":
            options["quality"] = self.jpeg_quality
        imwrite = self._imwrite
        if imwrite is None:
            # Imported by the first image, so a run without images never pays for it,
            # and here, on an encoder thread, so the training loop does not wait the
            # ~30 ms it takes (plus ~35 ms for the plugin's first use): much of it
            # runs while the loop's own numpy or torch calls have released the GIL.
            import imageio.v3 as iio

            imwrite = self._imwrite = iio.imwrite
        imwrite(tmp, image.pixels, **options)
        os.replace(tmp, path)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted image is a complete file (or ``timeout``)."""
        with self._lock:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def stop(self) -> None:
        """Let the encoder threads finish: each takes one stop marker after the queued images."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(_STOP)

    def take_error(self) -> BaseException | None:
        with self._lock:
            if not self._errors:
                return None
            error = self._errors[0]
            self._errors.clear()
            return error

    def after_fork_in_child(self) -> None:
        self._threads = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._jobs = queue.SimpleQueue()
