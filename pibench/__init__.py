"""pibench: the cost of private (2PC) inference of transformer language-model variants."""


def _version() -> str:
    """The version setuptools-scm derived from git when pibench was built (pibench/_version.py), else the
    installed distribution's, else "0+unknown" (a copy of the tree that was never built)."""
    from importlib import import_module, metadata

    try:
        return str(import_module("pibench._version").__version__)
    except ImportError:
        try:
            return metadata.version("pibench")
        except metadata.PackageNotFoundError:
            return "0+unknown"


__version__ = _version()
