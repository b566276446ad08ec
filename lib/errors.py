"""The skyops error hierarchy.

Every error a user can meet is a :class:`SkyopsError` whose message says what was
wrong, where, and what to do about it. Callers that only need to know "bad input" versus
"the work failed" use the two branches: :class:`InputError` (the step runner exits 2) and
:class:`ProcessingError` (exit 1).
"""
from __future__ import annotations


class SkyopsError(Exception):
    """Base of all skyops errors; the message is meant for the person running the job."""

    exit_code = 1


class InputError(SkyopsError):
    """Bad input from the user: a parameter, a config file, a manifest. Exit code 2."""

    exit_code = 2


class ConfigError(InputError):
    """A config file is missing, unreadable, or does not validate."""


class StepParameterError(InputError):
    """A step was given a parameter it does not take, or a value of the wrong type."""


class UnknownStepError(InputError):
    """No step is registered under the requested dotted name."""


class CredentialError(InputError):
    """A credential file is missing, unsafe (readable by others) or lacks a section."""


class ArchivePathError(InputError):
    """A path from a manifest or archive would escape its root."""


class ProcessingError(SkyopsError):
    """The work itself failed (a tool crashed, a fit diverged). Exit code 1."""


class ToolError(ProcessingError):
    """An external tool (SExtractor, SWarp, PSFEx, ...) is missing or failed."""


class ProvenanceError(SkyopsError):
    """The provenance database is unreachable, not migrated, or inconsistent."""


class ExecutorError(ProcessingError):
    """An executor could not run a step or lost track of it."""


class StagingError(ProcessingError):
    """A file could not be staged (after retries), or failed verification."""


class ProvenanceUnavailableError(ProvenanceError):
    """The provenance database cannot be reached, or its URL or driver is wrong."""


class ProvenanceSchemaError(ProvenanceError):
    """The provenance database is not at the schema revision this code expects."""


class ProvenanceInputError(ProvenanceError, InputError):
    """A file, run or record given to the provenance store is unknown, ambiguous or malformed."""

    exit_code = 2


class TransferError(StagingError):
    """One file could not be fetched: names the file, its (password-free) source URL, the
    number of attempts and the last reason, so the message alone says what to look at."""

    def __init__(self, message: str, *, relpath: str = "", url: str = "", attempts: int = 0,
                 reason: str = "", fatal: bool = False) -> None:
        super().__init__(message)
        self.relpath = relpath
        self.url = url
        self.attempts = attempts
        self.reason = reason
        #: True when no other file from the same source can succeed (credentials refused).
        self.fatal = fatal


class StagingIncompleteError(StagingError):
    """Some files of a manifest could not be staged. ``failures`` holds one
    :class:`TransferError` per file and ``report`` what *was* staged (a rerun skips those)."""

    def __init__(self, message: str, *, failures: list[TransferError], report: object = None) -> None:
        super().__init__(message)
        self.failures = failures
        self.report = report


class ArchiveError(SkyopsError):
    """The archive database is unreachable, not initialised, or refused a statement."""


class ArchiveConnectionError(ArchiveError):
    """Could not connect to the archive database (credentials redacted from the message)."""


class UnknownQueryError(InputError):
    """No named archive query is registered under the requested name."""


class QueryParameterError(InputError):
    """A named archive query was given a missing, unknown or ill-typed parameter."""


class SimulationError(InputError):
    """A synthetic-survey request (``skyops.sim``) is invalid: unknown preset, bad seed,
    unknown exposure or CCD, inconsistent sizes. Exit code 2."""


class SimulationBuildError(ProcessingError):
    """Building or registering a synthetic survey failed part-way (disk, database)."""
