"""Errors a user can act on. Each class carries its exit code and a default hint.

The CLI's one handler (``cli.UrbanlnGroup``) prints ``error: …`` and ``hint: …``
on stderr and exits with ``exit_code``; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import errno


class UrbanlnError(Exception):
    """Base class: exit code 1 (general failure)."""

    exit_code = 1
    default_hint: str | None = None

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint


class UsageProblem(UrbanlnError):
    """Bad options, bad config, bad argument values: exit code 2."""

    exit_code = 2
    default_hint = "run the command with --help to see its options"


class ConfigError(UsageProblem):
    default_hint = "check the --config file; tables are named after commands, keys after their options"


class InputError(UrbanlnError):
    """A missing, unreadable or wrong input file or artifact: exit code 3."""

    exit_code = 3


class WrongArtifactError(InputError):
    pass


class OutputExistsError(UrbanlnError):
    default_hint = "pass --overwrite to replace it, or choose another -o/--out"


class OutputLocked(UrbanlnError):
    """Another process is writing the same output: exit code 1."""

    default_hint = "wait for the other run to finish, or write to another -o/--out"


class ServiceUnavailable(UrbanlnError):
    """A service we depend on (an Ollama server, a model) is not there: exit code 4."""

    exit_code = 4


class Interrupted(UrbanlnError):
    """Ctrl-C: partial work is kept for resume; exit code 130."""

    exit_code = 130
    default_hint = "run the same command again to resume; finished work is kept"


def describe_os_error(exc: OSError) -> tuple[str, str]:
    """The error and hint lines for an OSError that reached the CLI (exit code 1)."""
    where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if (
        exc.errno is None and exc.__cause__ is not None
    ):  # GDAL: "Write failed. See previous exception", the cause says what
        reason = f"{reason} ({exc.__cause__})"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        hint = (
            "free some disk space (or write elsewhere with -o), then run the same command again; finished work is kept"
        )
    elif exc.errno in (errno.EACCES, errno.EPERM):
        hint = "check the permissions of that path, or write elsewhere with -o"
    elif exc.errno == errno.EROFS:
        hint = "that disk is read-only: write elsewhere with -o"
    else:
        hint = (
            "check that the path is writable and the disk has free space, then run the same command again; "
            "finished work is kept"
        )
    return f"{reason}{where}", hint


EXIT_CODES = {
    0: "success",
    1: "general failure (including an output that exists without --overwrite)",
    2: "usage: bad option, argument or config key",
    3: "bad or missing input file or artifact",
    4: "service unavailable (Ollama down, model not pulled)",
    130: "interrupted; partial work is kept and the same command resumes",
}
