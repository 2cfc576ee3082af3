"""User-facing errors: the CLI prints their message as one line and exits with code 2."""


class BenchError(Exception):
    """Bad input or an unmet precondition the user can fix (message says what and how)."""


class AuditError(BenchError):
    """An attack returned x_adv outside [0, 1] or outside its norm ball."""
