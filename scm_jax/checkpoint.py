"""Orbax checkpoints for training: model state, data-iterator state and config, one step directory each.

A step directory holds three Orbax items: "state" (pytree of sharded arrays, StandardSave), "data" (the
data-iterator state, JSON) and "config" (JSON). Restoring reshards onto the mesh the abstract state names.
A step that cannot be read is skipped with a warning and, once an older step restores, moved to `corrupt/`.

Inference (`restore_subtree`, `read_subtree`) is read-only: it restores one subtree (e.g. one EMA) by its tree path
with Orbax's partial restore, so only those arrays are read, and it never creates, probes, moves or writes anything in
the directory (a read-only mount, another run's workdir). `save_tree` writes a standalone PyTree (an export).
"""

import base64
import itertools
import json
import logging
import os
import time
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

_log = logging.getLogger(__name__)

CORRUPT_SUBDIR = "corrupt"

DataState = dict | bytes | None


class Checkpointer:
    """Saves and restores training checkpoints; call every method on every process."""

    def __init__(
        self,
        directory: str | epath.PathLike,
        *,
        keep: int,
        save_interval_steps: int,
        async_save: bool = True,
    ):
        if keep < 1 or save_interval_steps < 1:
            raise ValueError(f"keep={keep} and save_interval_steps={save_interval_steps} must both be >= 1.")
        self.directory = epath.Path(directory)
        if not self.directory.is_absolute():  # Orbax's tensorstore writes need absolute paths
            self.directory = epath.Path(os.path.abspath(directory))
        _check_writable(self.directory)
        # FixedIntervalPolicy alone: Orbax's default also saves the first step of every fresh run (a full
        # 1.5B-parameter write at step 1); preemption and the final step are saved by the loop with force=True.
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(save_interval_steps),
            preservation_policy=ocp.checkpoint_managers.LatestN(n=keep),
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, handler_registry=_handler_registry()
        )
        # Restores bypass CheckpointManager.restore: its Checkpointer enters a cross-process barrier only
        # after a *successful* read, so a shard failing on one host would leave the hosts in mismatched
        # collectives. The handler alone has none; `_first_readable` agrees on the outcome in one allgather.
        self._restorer = ocp.CompositeCheckpointHandler(handler_registry=_handler_registry())
        self._barrier_ids = itertools.count()

    def save(
        self, step: int, state: Any, *, data_state: DataState, config_json: str, force: bool = False
    ) -> bool:
        """Saves `state` at `step` if the save interval (or `force`) says so; returns whether it saved."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(_encode_data_state(data_state)),
            config=ocp.args.JsonSave(_parse_config(config_json)),
        )
        return self._manager.save(step, args=args, force=force)

    def restore(
        self, abstract_state: Any, step: int | None = None
    ) -> tuple[int, Any, DataState, str] | None:
        """Restores `step` (default: the latest readable step) onto the shardings in `abstract_state`.

        `abstract_state` is a pytree of `jax.ShapeDtypeStruct` with `.sharding` set. Returns
        `(step, state, data_state, config_json)`, or None when the directory holds no checkpoint.
        `config_json` is re-serialised with `json.dumps`: compare it parsed.
        """
        self._manager.wait_until_finished()
        found = _first_readable(self.directory, self._manager.all_steps(), step,
                                lambda s: self._read_step(s, abstract_state))
        if found is None:
            return None
        candidate, restored, unreadable = found
        for bad_step, bad_problem in unreadable:
            self._move_aside(bad_step, bad_problem)
        return candidate, restored.state, _decode_data_state(restored.data), json.dumps(restored.config)

    def _read_step(self, step: int, abstract_state: Any) -> Any:
        saved = _reading(lambda: self._manager.metadata(step).item_metadata["state"])
        _check_matches(abstract_state, saved.tree, f"step {step} in {self.directory}")
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
            config=ocp.args.JsonRestore(),
        )
        return _reading(lambda: self._restorer.restore(self.directory / str(step), args=args))

    def _move_aside(self, step: int, problem: str) -> None:
        """Moves an unreadable step out of Orbax's view (so the step can be saved again); never deletes it."""
        source = self.directory / str(step)
        target = self.directory / CORRUPT_SUBDIR / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        _log.warning("Moving unreadable checkpoint %s (%s) to %s (not deleted).", source, problem, target)
        if jax.process_index() == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            source.rename(target)
        ocp.multihost.sync_global_processes(f"scm_jax_checkpoint_move_aside_{next(self._barrier_ids)}")
        self._manager.reload()

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def wait(self) -> None:
        """Blocks until the in-flight async save is committed; raises its error if it failed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
        self._restorer.close()


def _handler_registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for item, save_args, restore_args in (
        ("state", ocp.args.StandardSave, ocp.args.StandardRestore),
        ("data", ocp.args.JsonSave, ocp.args.JsonRestore),
        ("config", ocp.args.JsonSave, ocp.args.JsonRestore),
    ):
        registry.add(item, save_args)
        registry.add(item, restore_args)
    return registry


def restore_subtree(directory: str | epath.PathLike, abstract: Any, path: tuple[str, ...],
                    step: int | None = None) -> tuple[int, Any] | None:
    """(step, subtree at `path` of the "state" item) of `step` (default: the latest readable step) of the
    Checkpointer directory `directory`, or None when it holds no checkpoint. Read-only (`read_subtree`); an
    unreadable step is skipped with a warning and left where it is."""
    directory = epath.Path(directory)
    found = _first_readable(directory, ocp.step.checkpoint_steps(directory), step,
                            lambda s: read_subtree(directory / str(s) / "state", abstract, path))
    return None if found is None else found[:2]


def read_subtree(item_dir: str | epath.PathLike, abstract: Any, path: tuple[str, ...] = ()) -> Any:
    """The subtree at `path` (e.g. ("ema", "ema_0.5")) of the PyTree saved in `item_dir`, onto the shardings of
    `abstract` (ShapeDtypeStruct leaves); reads only its arrays (Orbax partial restore) and writes nothing."""
    item_dir = epath.Path(item_dir)
    handler = ocp.PyTreeCheckpointHandler()
    saved = _reading(lambda: handler.metadata(item_dir).tree)
    for depth, key in enumerate(path):
        if not isinstance(saved, dict) or key not in saved:
            choices = sorted(saved) if isinstance(saved, dict) else []
            raise ValueError(f"{item_dir} has no {'/'.join(path[:depth + 1])}; choose one of {choices}.")
        saved = saved[key]
    _check_matches(abstract, saved, str(item_dir))
    item = abstract
    for key in reversed(path):
        item = {key: item}
    args = ocp.args.PyTreeRestore(item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                                  partial_restore=True)
    restored = _reading(lambda: handler.restore(item_dir, args=args))
    for key in path:
        restored = restored[key]
    return restored


def save_tree(directory: str | epath.PathLike, tree: Any) -> None:
    """Writes `tree` (arrays) as a standalone PyTree checkpoint at `directory` (which must not exist)."""
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(epath.Path(os.path.abspath(directory)), tree)
        checkpointer.wait_until_finished()


class _Unreadable(Exception):
    """A step's files cannot be read (missing, truncated, corrupt): try the previous step."""


def _reading(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception as e:  # noqa: BLE001 -- Orbax/TensorStore raise bare Exception on bad files.
        raise _Unreadable(_describe(e)) from e


def _first_readable(directory: epath.Path, steps: list[int], step: int | None,
                    read: Callable[[int], Any]) -> tuple[int, Any, list[tuple[int, str]]] | None:
    """(step, read(step), [(newer unreadable step, problem)]) of the newest step every process reads (only `step`
    if given); None when there is no step; raises when none can be read."""
    steps = sorted(steps, reverse=True)
    if step is not None:
        if step not in steps:
            raise FileNotFoundError(f"No checkpoint for step {step} in {directory}; it has {steps}.")
        steps = [step]
    unreadable: list[tuple[int, str]] = []
    for candidate in steps:
        restored, problem = None, None
        try:
            restored = read(candidate)
        except _Unreadable as e:
            problem = str(e)
        # Each process reads its own shards: accept the step only if all of them succeeded.
        ok = multihost_utils.process_allgather(np.array(problem is None))
        if ok.all():
            return candidate, restored, unreadable
        problem = problem or f"processes {np.flatnonzero(~ok).tolist()} could not read their shards (see their logs)"
        unreadable.append((candidate, problem))
        _log.warning("Checkpoint step %d in %s cannot be restored: %s. Trying the previous step.",
                     candidate, directory, problem)
    if not unreadable:
        return None
    tried = "; ".join(f"step {s}: {p}" for s, p in unreadable)
    raise RuntimeError(
        f"No restorable checkpoint in {directory}. Tried {tried}. Nothing was moved or deleted: "
        "repair or remove these step directories, or start from an empty workdir."
    )


def _check_writable(directory: epath.Path) -> None:
    probe = directory / f".write_probe_{jax.process_index()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise PermissionError(
            f"Checkpoint directory {directory} is not writable ({e}). Point the workdir at a writable place."
        ) from e


def _check_matches(abstract_state: Any, saved_tree: Any, where: str) -> None:
    """Raises at the first parameter whose path, shape or dtype differs between model and checkpoint."""
    expected, saved = _by_path(abstract_state), _by_path(saved_tree)
    hint = f"The checkpoint at {where} is for another architecture/config; restore it with its own config."
    for path, want in expected.items():
        if not isinstance(want, jax.ShapeDtypeStruct) or want.sharding is None:
            raise TypeError(
                f"abstract_state leaf {path} is {want!r}; pass jax.ShapeDtypeStruct leaves with .sharding "
                "set to the target sharding, e.g. jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=...)."
            )
        if path not in saved:
            raise ValueError(f"Parameter {path} {want.shape} is missing from the checkpoint. {hint}")
        got = saved[path]
        # Python scalars are saved as 64-bit ScalarMetadata; only arrays carry a meaningful dtype.
        dtype_differs = not isinstance(got, ocp.metadata.ScalarMetadata) and got.dtype != want.dtype
        if tuple(got.shape) != tuple(want.shape) or dtype_differs:
            raise ValueError(
                f"Parameter {path}: checkpoint has shape {tuple(got.shape)} {got.dtype}, the model expects "
                f"{tuple(want.shape)} {want.dtype}. {hint}"
            )
    if extra := [path for path in saved if path not in expected]:
        raise ValueError(f"Checkpoint parameter {extra[0]} does not exist in the model. {hint}")


def _by_path(tree: Any) -> dict[str, Any]:
    """Leaves keyed "a/b/0/c"; key kinds are dropped since Orbax metadata turns namedtuples into dicts."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(_key_name(k) for k in path): leaf for path, leaf in leaves}


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):  # DictKey / FlattenedIndexKey, GetAttrKey, SequenceKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _describe(error: BaseException, limit: int = 400) -> str:
    """The root cause: Orbax wraps TensorStore errors in a bare Exception that only prints the store spec."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[:limit] + "..."


def _encode_data_state(data_state: DataState) -> dict:
    if isinstance(data_state, bytes):
        return {"bytes_base64": base64.b64encode(data_state).decode("ascii")}
    try:
        json.dumps(data_state)
    except TypeError as e:
        raise TypeError(f"data_state must be JSON-serialisable, bytes or None ({e}).") from e
    return {"json": data_state}


def _decode_data_state(encoded: dict) -> DataState:
    if "bytes_base64" in encoded:
        return base64.b64decode(encoded["bytes_base64"])
    return encoded["json"]


def _parse_config(config_json: str) -> Any:
    try:
        return json.loads(config_json)
    except json.JSONDecodeError as e:
        raise ValueError(f"config_json is not valid JSON ({e}); pass e.g. config.to_json().") from e
