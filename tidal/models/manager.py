"""Keeps each configured model's versions loaded per its policy, and resolves requests to a servable."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from tidal.clock import Clock, RealClock
from tidal.errors import Code, InvalidArgument, NotFound, TidalError
from tidal.models import warmup
from tidal.models.batching import OnBatch
from tidal.models.config import BatchingOptions, ModelConfig, RuntimeOptions
from tidal.models.lifecycle import (
    Load, LoadFailure, RetryPolicy, Unload, VersionState, VersionStatus, plan_transitions,
)
from tidal.models.repository import Repository, select_versions
from tidal.models.runtimes import load_runtime
from tidal.models.servable import Servable

log = logging.getLogger(__name__)


class _Model:
    """The manager's book-keeping for one model."""

    def __init__(self, config: ModelConfig, repository: Repository) -> None:
        self.config = config
        self.repository = repository
        self.status: dict[int, VersionStatus] = {}
        self.available: dict[int, Servable] = {}
        self.latest: Servable | None = None
        self.failures: dict[int, LoadFailure] = {}
        self.aspired: tuple[int, ...] = ()
        self.last_error: str | None = None
        self.warned_empty = False
        self.retired = False  # dropped by reconfigure: a poll already under way must not load it again
        self.lock = asyncio.Lock()

    def states(self) -> dict[int, VersionState]:
        return {v: s.state for v, s in self.status.items()}

    def set_state(self, version: int, state: VersionState, code: str = "OK", message: str = "") -> None:
        self.status[version] = VersionStatus(version, state, code, message)

    def route(self) -> None:
        self.latest = self.available[max(self.available)] if self.available else None


class ModelManager:
    """Loads, polls and serves the configured models (TF Serving's ServerCore, for one process).

    `batching=None` means Tidal's default (batching on with TF Serving's parameters); pass
    `BatchingOptions(enabled=False)` to turn it off. Credentials for remote base paths come
    from the environment (see repository.storage_options_from_env) or `storage_options`.
    """

    def __init__(self, configs: Sequence[ModelConfig], *, clock: Clock | None = None, poll_seconds: float = 1.0,
                 batching: BatchingOptions | None = None, cache_dir: str | None = None,
                 runtime_options: RuntimeOptions | None = None, on_batch: OnBatch | None = None,
                 storage_options: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                 retry: RetryPolicy | None = None, drain_seconds: float = 30.0,
                 warmup: bool = True, warmup_iterations: int = 1) -> None:
        names = [c.name for c in configs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidArgument(f"model {duplicates[0]!r} is configured more than once")
        self._clock = clock or RealClock()
        self._poll_seconds = poll_seconds
        self._batching = batching or BatchingOptions(oversize_runs_alone=True)
        self._runtime_options = runtime_options or RuntimeOptions()
        self._on_batch = on_batch
        self._retry = retry or RetryPolicy()
        self._drain_seconds = drain_seconds
        self._warmup = warmup
        self._warmup_iterations = warmup_iterations
        self._repository_args = {"cache_dir": cache_dir, "storage_options": storage_options, "env": env}
        self._models: dict[str, _Model] = {c.name: self._new_model(c) for c in configs}
        self._poller: asyncio.Task | None = None
        self._stopped = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load every model's initial versions, then poll the base paths in the background."""
        await self.poll()
        if self._poll_seconds > 0:
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    async def stop(self) -> None:
        self._stopped = True
        if self._poller is not None:
            self._poller.cancel()
            try:
                await self._poller
            except asyncio.CancelledError:
                pass
            self._poller = None
        for model in self._models.values():
            async with model.lock:
                for version in sorted(model.available):
                    await self._unload(model, version, evict=False)  # a restart reuses the cache

    def _new_model(self, config: ModelConfig) -> _Model:
        return _Model(config, Repository(config.base_path, **self._repository_args))

    async def reconfigure(self, configs: Sequence[ModelConfig]) -> None:
        """Serve exactly `configs` now (a reloaded config file, ModelService's HandleReloadConfigRequest).

        New models are loaded; removed ones stop taking requests and are unloaded once the requests
        inside have finished; a changed version policy or label set applies at once; a changed base
        path loads the new location's versions before the old ones go, so no request finds none.
        """
        names = [c.name for c in configs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidArgument(f"model {duplicates[0]!r} is configured more than once")
        wanted = {c.name: c for c in configs}
        retired: list[_Model] = []
        for name in [n for n in self._models if n not in wanted]:
            log.info("model %s: removed from the configuration", name)
            retired.append(self._models.pop(name))
        for config in configs:
            model = self._models.get(config.name)
            if model is None:
                log.info("model %s: added to the configuration", config.name)
                fresh = self._new_model(config)
                await self._poll_model(fresh)
                self._models[config.name] = fresh
            elif model.config.base_path != config.base_path:
                log.info("model %s: base path changed", config.name)
                fresh = self._new_model(config)
                await self._poll_model(fresh)
                self._models[config.name] = fresh
                retired.append(model)
            elif model.config != config:
                log.info("model %s: version policy or labels changed", config.name)
                model.config = config
                await self._poll_model(model)
        for model in retired:
            model.retired = True
            async with model.lock:
                for version in sorted(model.available):
                    await self._unload(model, version)

    async def _poll_forever(self) -> None:
        while not self._stopped:
            await self._clock.sleep(self._poll_seconds)
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:  # a poll must never end the loop
                log.exception("polling the model repository failed")

    async def poll(self) -> None:
        """One pass: list every base path and load/unload versions to match the policies."""
        await asyncio.gather(*(self._poll_model(m) for m in self._models.values()))

    async def _poll_model(self, model: _Model) -> None:
        async with model.lock:
            if model.retired:
                return
            try:
                present = await asyncio.to_thread(model.repository.list_versions)
            except Exception as e:
                # A store that cannot be read is not a store without versions: keep serving.
                message = e.message if isinstance(e, TidalError) else f"{type(e).__name__}: {e}"
                if message != model.last_error:
                    log.warning("model %s: %s", model.config.name, message)
                    model.last_error = message
                return
            if model.last_error is not None:
                log.info("model %s: base path %s readable again", model.config.name, model.repository.display)
                model.last_error = None
            aspired = select_versions(present, model.config.version_policy)
            if not aspired and (model.aspired or not model.warned_empty):
                log.warning("model %s: no versions under %s match policy %s (found: %s)", model.config.name,
                            model.repository.display, model.config.version_policy, present or "none")
            model.warned_empty = not aspired
            model.aspired = aspired
            for v in list(model.failures):
                if v not in present:
                    del model.failures[v]  # removed and perhaps re-published: a fresh start
            for v in aspired:
                if v not in model.status or (model.status[v].state == VersionState.END and v not in model.failures):
                    model.set_state(v, VersionState.START)
            await self._reconcile(model)

    async def _reconcile(self, model: _Model) -> None:
        while not self._stopped:
            decisions = plan_transitions(model.aspired, model.states(), model.failures, self._retry,
                                         self._clock.now())
            if not decisions:
                return
            for decision in decisions:
                if isinstance(decision, Load):
                    await self._load(model, decision.version)
                elif isinstance(decision, Unload):
                    await self._unload(model, decision.version)
            # Loads may have made unloads safe: plan again.

    async def _load(self, model: _Model, version: int) -> None:
        name = model.config.name
        model.set_state(version, VersionState.LOADING)
        log.info("model %s: loading version %d", name, version)
        try:
            servable, path = await asyncio.to_thread(self._build, model, version)
            if self._warmup:
                try:
                    await warmup.replay(servable, path, self._warmup_iterations)
                except BaseException:
                    servable.close()
                    raise
        except Exception as e:
            code, message = _describe(e)
            previous = model.failures.get(version)
            model.failures[version] = LoadFailure((previous.attempts if previous else 0) + 1, self._clock.now())
            model.set_state(version, VersionState.END, code, message)
            try:
                await asyncio.to_thread(model.repository.evict, version)
            except Exception:
                pass
            log.error("model %s: version %d failed to load: %s", name, version, message)
            return
        if self._stopped:
            servable.close()
            model.set_state(version, VersionState.END)
            return
        model.failures.pop(version, None)
        model.available[version] = servable
        model.route()
        model.set_state(version, VersionState.AVAILABLE)
        log.info("model %s: version %d available (%s)", name, version, servable.platform)

    def _build(self, model: _Model, version: int) -> tuple[Servable, str]:
        path = model.repository.local_path(version)
        runtime = load_runtime(path, self._runtime_options)
        return Servable(model.config.name, version, runtime, batching=self._batching,
                        runtime_options=self._runtime_options, clock=self._clock, on_batch=self._on_batch), path

    async def _unload(self, model: _Model, version: int, evict: bool = True) -> None:
        servable = model.available.pop(version, None)
        model.route()
        if servable is None:
            return
        model.set_state(version, VersionState.UNLOADING)
        log.info("model %s: unloading version %d", model.config.name, version)
        if not await servable.drain(self._drain_seconds):
            log.warning("model %s: version %d still had %d requests after %.0fs; closing it anyway",
                        model.config.name, version, servable.inflight, self._drain_seconds)
        servable.close()
        model.set_state(version, VersionState.END)
        if evict:
            try:
                await asyncio.to_thread(model.repository.evict, version)  # the cache holds served versions only
            except OSError as e:
                log.warning("model %s: cannot remove cached version %d: %s", model.config.name, version, e)

    # -- queries -------------------------------------------------------------------------------

    def model_names(self) -> list[str]:
        return list(self._models)

    def config(self, name: str) -> ModelConfig:
        model = self._models.get(name)
        if model is None:
            raise NotFound(f"Could not find any versions of model {name}")
        return model.config

    @property
    def ready(self) -> bool:
        return all(m.available for m in self._models.values())

    def _label_version(self, model: _Model, label: str) -> int:
        version = model.config.version_labels.get(label)
        if version is None:
            raise InvalidArgument(f"Unrecognized servable version label: {label}")
        return version

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request goes to; NotFound with TF Serving's messages when there is none."""
        model = self._models.get(name)
        if version is None and label is None:
            if model is not None and model.latest is not None:
                return model.latest
            raise NotFound(f"Servable not found for request: Latest({name})")
        if version is not None and label is not None:
            raise InvalidArgument(
                f"Both model version ({version}) and model version label ({label}) cannot be supplied.")
        if label is not None:
            if model is None:
                raise NotFound(f"Servable not found for request: Latest({name})")
            version = self._label_version(model, label)
        servable = model.available.get(version) if model is not None else None
        if servable is None:
            raise NotFound(f"Servable not found for request: Specific({name}, {version})")
        return servable

    def status(self, name: str, version: int | None = None, label: str | None = None) -> list[VersionStatus]:
        """Version states, newest first (TF Serving's GetModelStatus)."""
        model = self._models.get(name)
        if model is None or not model.status:
            raise NotFound(f"Could not find any versions of model {name}")
        if version is not None and label is not None:
            raise InvalidArgument(
                f"Both model version ({version}) and model version label ({label}) cannot be supplied.")
        if label is not None:
            version = self._label_version(model, label)
        if version is not None:
            status = model.status.get(version)
            if status is None:
                raise NotFound(f"Could not find version {version} of model {name}")
            return [status]
        return [model.status[v] for v in sorted(model.status, reverse=True)]


def _describe(e: BaseException) -> tuple[str, str]:
    if isinstance(e, TidalError):
        return e.code.value, e.message
    log.debug("load error", exc_info=e)
    return Code.UNKNOWN.value, f"{type(e).__name__}: {e}"
