"""Secure two-party computation with CrypTen. `settings.py` is light (suites validate against it);
everything else imports torch and CrypTen and is used only by the runner, never by the analytic path."""
