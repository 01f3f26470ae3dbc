"""Quiet native logs for the `python -m tfsparse` command.

TensorFlow, its CUDA probing, absl and the TFLite converter and interpreter
log from C++ straight to the process's standard error, some of it while
TensorFlow is being imported, before any setting can be read: nothing a
job's user can act on. `python -m tfsparse` imports the `tfsparse` package
(and so TensorFlow) before it runs `tfsparse/__main__.py`, so the package
calls `silence_for_command()` first thing. This module imports nothing but
the standard library.
"""

import os
import sys

PACKAGE = "tfsparse"


def started_as_command(package=PACKAGE):
    """True while `python -m <package>` imports the package, before its `__main__` runs.

    Python sets `sys.argv[0]` to `"-m"` until the module to run is found;
    `sys.orig_argv` names that module.

    Args:
        package: the package name run with `-m`.

    Returns:
        A bool.

    Example:

    >>> started_as_command()  # inside pytest, not `python -m tfsparse`
    False
    """
    if sys.argv[:1] != ["-m"]:
        return False
    for index, arg in enumerate(sys.orig_argv[1:], start=1):
        if arg == "-m":
            return sys.orig_argv[index + 1:index + 2] == [package]
        if arg.startswith("-m"):
            return arg == f"-m{package}"
    return False


def silence_for_command():
    """Silences native logs if this process is `python -m tfsparse` without `--verbose`.

    Sets `TF_CPP_MIN_LOG_LEVEL=3` (unless set) and points file descriptor 2
    at the null device for the rest of the process, while Python's
    `sys.stderr` (argument errors, job errors, warnings, tracebacks) keeps
    writing where standard error went. `--verbose` leaves both alone.

    Returns:
        True if the logs were silenced.
    """
    if not started_as_command() or "--verbose" in sys.argv[1:]:
        return False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    terminal = os.fdopen(os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding, errors=sys.stderr.errors)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    sys.stderr = terminal
    return True
