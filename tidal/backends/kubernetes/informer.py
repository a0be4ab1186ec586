"""A list-then-watch of one kind of object by label selector, kept in memory (what client-go calls an informer)."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from tidal.backends.kubernetes.client import TIMEOUT_S, describe_failure

log = logging.getLogger(__name__)

WATCH_SECONDS = 60  # the server ends a watch after this long; the informer watches on from where it was


class InformerError(RuntimeError):
    pass


class Informer:
    """Objects by name, kept current by a watch in a thread; `changed` counts changes so a caller can wait for one."""

    def __init__(self, list_fn: Callable[..., Any], namespace: str, label_selector: str, what: str,
                 cond: threading.Condition | None = None) -> None:
        self.list_fn = list_fn
        self.namespace = namespace
        self.selector = label_selector
        self.what = what
        self._objects: dict[str, Any] = {}
        self._deleted: set[str] = set()
        self._cond = cond or threading.Condition()  # shared by informers whose changes one waiter follows
        self._synced = False
        self._error = ""
        self._changes = 0
        self._stop = threading.Event()
        self._watch = None
        self._thread: threading.Thread | None = None

    def start(self) -> "Informer":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"informer-{self.what}", daemon=True)
            self._thread.start()
        return self

    def _publish(self, fn: Callable[[], None]) -> None:
        with self._cond:
            fn()
            self._changes += 1
            self._cond.notify_all()

    def _run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException
        while not self._stop.is_set():
            try:
                listed = self.list_fn(self.namespace, label_selector=self.selector, _request_timeout=TIMEOUT_S)

                def relist() -> None:
                    self._objects = {o.metadata.name: o for o in listed.items}
                    self._synced, self._error = True, ""
                self._publish(relist)
                version = listed.metadata.resource_version
                while not self._stop.is_set():
                    self._watch = watch.Watch()
                    for event in self._watch.stream(self.list_fn, self.namespace, label_selector=self.selector,
                                                    resource_version=version, timeout_seconds=WATCH_SECONDS,
                                                    allow_watch_bookmarks=True):
                        if self._stop.is_set():
                            break
                        obj = event["object"]
                        version = obj.metadata.resource_version
                        if event["type"] == "BOOKMARK":
                            continue
                        self._publish(lambda e=event, o=obj: self._apply_event(e["type"], o))
            except ApiException as exc:
                if exc.status == 410:  # the version fell out of the server's history: list again
                    continue
                self._failed(describe_failure(exc, f"watching {self.what}"))
            except Exception as exc:  # noqa: BLE001 - a dropped connection: list again after a pause
                self._failed(describe_failure(exc, f"watching {self.what}"))

    def _apply_event(self, kind: str, obj: Any) -> None:
        name = obj.metadata.name
        if kind == "DELETED":
            self._objects.pop(name, None)
            self._deleted.add(name)
        else:
            self._objects[name] = obj
            self._deleted.discard(name)

    def _failed(self, message: str) -> None:
        if self._stop.is_set():
            return
        log.warning("%s", message)
        self._publish(lambda: setattr(self, "_error", message))
        self._stop.wait(1.0)

    def snapshot(self, timeout: float = TIMEOUT_S, fail_fast: bool = False) -> tuple[dict[str, Any], frozenset[str]]:
        """The objects now and the names seen deleted; waits for the first list (raises with why it failed).
        `fail_fast`: the first failure of that list is the answer (a check at start), not retried until `timeout`."""
        with self._cond:
            answered = self._cond.wait_for(lambda: self._synced or self._stop.is_set() or (fail_fast and self._error),
                                           timeout)
            if not answered or not (self._synced or self._stop.is_set()):
                raise InformerError(self._error or f"listing {self.what}: no answer in {timeout:.0f} s")
            return dict(self._objects), frozenset(self._deleted)

    @property
    def changes(self) -> int:
        with self._cond:
            return self._changes

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        with self._cond:
            self._cond.notify_all()
