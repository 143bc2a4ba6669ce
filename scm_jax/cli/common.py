"""What the binaries share: --help listing their own flags, config files by name, quiet Orbax INFO logs, and bad
input (flags, config, data, checkpoints) as one `error:` line and exit status 2 instead of a traceback.

Set SCM_JAX_TRACEBACK=1 (or pass --verbosity=1) to get the traceback of such an error too.
"""
import difflib
import importlib.util
import logging as pylogging
import os
import sys
import traceback
from typing import Callable, NoReturn

from absl import app, flags, logging

USER_ERRORS = (ValueError, OSError, FloatingPointError)  # OSError: missing files, permissions, full disk
FLAG_ERRORS = (flags.Error, ValueError, TypeError, AttributeError, KeyError, OSError)  # config files, overrides
TRACEBACK_ENV = "SCM_JAX_TRACEBACK"


class _QuietOrbax(pylogging.Filter):
    def filter(self, record: pylogging.LogRecord) -> bool:
        return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname


def configs_dir() -> str:
    """The folder of the installed `configs` package (the config files shipped with scm_jax)."""
    return importlib.util.find_spec("configs").submodule_search_locations[0]


def shipped_configs() -> list[str]:
    """Names of the shipped config files (those defining get_config)."""
    files = sorted(f for f in os.listdir(configs_dir()) if f.endswith(".py"))
    return [f[:-3] for f in files if "def get_config(" in open(os.path.join(configs_dir(), f)).read()]


def resolve_config(value: str) -> str:
    """--config value -> an existing file path[:arg]: a path, a shipped config's name (`embedded:sct`), or
    `configs/<name>.py` from any directory (the shipped file when no such file is in the working directory)."""
    path, sep, arg = value.partition(":")
    if os.path.isfile(path):
        return value
    shipped = shipped_configs()
    name = path[:-3] if path.endswith(".py") else path
    if os.path.dirname(name) in ("", "configs") and os.path.basename(name) in shipped:
        return os.path.join(configs_dir(), os.path.basename(name) + ".py") + sep + arg
    raise FileNotFoundError(f"--config={value}: {path} is neither a file nor a shipped config; use a path to a "
                            f"config file or one of {shipped}, e.g. --config=embedded:sct.")


def _with_resolved_config(argv: list[str]) -> list[str]:
    prefix = "--config="
    return [prefix + resolve_config(a[len(prefix):]) if a.startswith(prefix) else a for a in argv]


def _override_error(argv: list[str]) -> str | None:
    """For an unknown --config.a.b key: the one line naming it and its near match (None if every key exists)."""
    config_file = next((a[len("--config="):] for a in argv if a.startswith("--config=")), None)
    if config_file is None:
        return None
    try:  # the config without overrides (the flag's value is unset when an override failed)
        config = flags.FLAGS["config"].parser.parse(config_file)
    except FLAG_ERRORS:
        return None
    overrides = (a[2:].partition("=") for a in argv if a.startswith("--config."))
    return next(filter(None, (_unknown_key(config, flag, value) for flag, _, value in overrides)), None)


def _unknown_key(config, flag: str, value: str) -> str | None:
    """`flag` (config.a.b) names a key missing from `config`: the line naming it and its near match."""
    node, keys = config, flag.split(".")[1:]
    for depth, key in enumerate(keys):
        if not hasattr(node, "keys") or key not in node:
            known = list(node.keys()) if hasattr(node, "keys") else []
            near = difflib.get_close_matches(key, known, n=1)
            fixed = ".".join(["config", *keys[:depth], *near, *keys[depth + 1:]])
            hint = f' Did you mean "{near[0]}" (--{fixed}={value})?' if near else f" Its keys are {sorted(known)}."
            return f"--{flag}: {'.'.join(['config', *keys[:depth]])} has no key {key!r}.{hint}"
        node = node[key]
    return None


def _one_line(e: BaseException) -> str:
    """The exception as one line: its type and the last line of its message (where config_flags puts the cause)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    last = lines[-1] if lines else type(e).__name__
    return last if first == last else f"{first.split(': ')[0]}: {last}"


def _fail(message: str) -> NoReturn:
    if os.environ.get(TRACEBACK_ENV) or (flags.FLAGS.is_parsed() and flags.FLAGS.verbosity >= 1):
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with config names resolved; a bad flag or config is one `error:` line, exit 2."""
    try:
        argv = sys.argv[:] = _with_resolved_config(argv)  # config_flags reads its overrides from sys.argv
        return flags.FLAGS(argv)
    except FLAG_ERRORS as e:
        _fail(_override_error(argv) or _one_line(e))


def _adopt_key_flags(module_name: str) -> None:
    """--help shows the key flags of sys.argv[0]: a console script's are those of the module defining `main`."""
    for flag in flags.FLAGS.get_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    main_module = sys.modules["__main__"]
    if not main_module.__doc__:
        main_module.__doc__ = sys.modules[module_name].__doc__


def run_app(main: Callable) -> None:
    """app.run(main); a user error (bad flag, config, data, checkpoint) exits 2 with its message on one line."""
    def guarded(argv):
        logging.get_absl_handler().addFilter(_QuietOrbax())
        try:
            main(argv)
        except USER_ERRORS as e:
            _fail(f"{type(e).__name__}: {e}")
    _adopt_key_flags(main.__module__)
    app.run(guarded, flags_parser=parse_flags)
