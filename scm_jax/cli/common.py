"""What the three binaries share: quiet Orbax INFO logs, and bad input as one clear line instead of a traceback."""
import logging as pylogging
import sys
from typing import Callable

from absl import app, logging

USER_ERRORS = (ValueError, OSError, FloatingPointError)  # OSError: missing files, permissions, full disk


class _QuietOrbax(pylogging.Filter):
    def filter(self, record: pylogging.LogRecord) -> bool:
        return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname


def run_app(main: Callable) -> None:
    """app.run(main); a user error (bad config, data, checkpoint) exits 2 with its message."""
    def guarded(argv):
        logging.get_absl_handler().addFilter(_QuietOrbax())
        try:
            main(argv)
        except USER_ERRORS as e:
            print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
            sys.exit(2)
    app.run(guarded)
