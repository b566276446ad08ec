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
