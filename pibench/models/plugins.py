"""Architectures from the user's own files: `pibench --include PATH` (a .py file, or a folder of them) and
the entry-point group `pibench.variants` of installed packages. Both register through the same
`@variant` decorator as the built-in variants, so a user never edits pibench to add an architecture:

    # my_variants.py
    from pibench.models.config import ModelConfig
    from pibench.models.variants import variant

    @variant("sm_ln_r_half", "SM + LN + R/-", note="ReLU in the first half of the FFNs, none after")
    def _(c: ModelConfig) -> ModelConfig:
        return c.replace(activation="relu", activation_blocks=c.L // 2)

    $ pibench --include my_variants.py cost my_suite.yaml

Each variant knows where it came from (`Variant.origin`: built-in, the included file and its SHA-256,
or the installed distribution), and records keep it. A name that is already registered, a file that
does not import, or a path that is not a .py file or folder is a one-line error.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from importlib import metadata
from pathlib import Path

from pibench.models.variants import Origin, loading_from
from pibench.util.errors import PibenchError

GROUP = "pibench.variants"
MAX_FILES = 256


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.glob("*.py") if not p.name.startswith(("_", ".")))
        if not files:
            raise PibenchError(f"--include '{path}': the folder holds no .py file")
        if len(files) > MAX_FILES:
            raise PibenchError(f"--include '{path}': over {MAX_FILES} .py files")
        return files
    if not path.exists():
        raise PibenchError(f"--include '{path}' not found")
    if not path.is_file() or path.suffix != ".py":
        raise PibenchError(f"--include '{path}' is not a .py file or a folder of them")
    return [path]


def include(paths: list[str]) -> list[Path]:
    """Import every .py file of `paths` (files, or folders of them), registering what they define;
    returns the files imported, resolved."""
    done = []
    for given in paths:
        for file in _files(Path(given)):
            file = file.resolve()
            if file in done:
                continue
            digest = hashlib.sha256(file.read_bytes()).hexdigest()
            name = f"pibench_include_{file.stem}_{digest[:12]}"
            if name in sys.modules:  # this very file, loaded before by this process (a warm party's last run)
                done.append(file)
                continue
            spec = importlib.util.spec_from_file_location(name, file)
            if spec is None or spec.loader is None:
                raise PibenchError(f"--include '{file}' cannot be imported")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            origin = Origin(source="include", module=name, file=str(file), sha256=digest)
            with loading_from(origin):
                try:
                    spec.loader.exec_module(module)
                except PibenchError as err:
                    raise PibenchError(f"--include '{file}': {err}") from None
                except Exception as err:  # the user's code: one line, with where it failed
                    where = f" (line {err.lineno})" if isinstance(err, SyntaxError) and err.lineno else ""
                    raise PibenchError(f"--include '{file}': {type(err).__name__}: {err}{where}") from None
            done.append(file)
    return done


def load_entry_points() -> list[str]:
    """Load every installed package's `pibench.variants` entry point (a module or an object whose
    import registers variants); returns their names."""
    loaded = []
    for ep in metadata.entry_points(group=GROUP):
        dist = ep.dist.name if ep.dist else "?"
        origin = Origin(source="entry point", module=ep.value, file=None, sha256=None, distribution=dist)
        with loading_from(origin):
            try:
                ep.load()
            except PibenchError as err:
                raise PibenchError(f"entry point '{ep.name}' of {dist} ({GROUP}): {err}") from None
            except Exception as err:
                raise PibenchError(
                    f"entry point '{ep.name}' of {dist} ({GROUP}) failed to load: {type(err).__name__}: {err}"
                ) from None
        loaded.append(ep.name)
    return loaded
