"""Secure two-party computation backends. Imported only by the runner, never on the analytic path."""
