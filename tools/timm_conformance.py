"""Run timm's own model tests (``tests/test_models.py``) against every model s4vision registers.

Fetches the source distribution of the installed timm version from the package registry
(``pip download timm==<version> --no-deps --no-binary :all:``), copies its
``tests/test_models.py`` into a temporary directory, and runs it with pytest restricted to the
s4vision models. Two additions to the test file's own model lists, printed when they are made:

* our model modules join ``FEAT_INTER_FILTERS`` (the families that implement
  ``forward_intermediates``), so the intermediates and ``features_only`` getter tests run on them;
* the video models (pretrained ``input_size`` ``(C, T, H, W)``) join ``NON_STD_FILTERS``: the
  standard config test asserts two spatial axes, the non-standard one does not.

A conftest restricts ``timm.list_models`` / ``list_pretrained`` to our models and deselects the
tests written for fixed timm models (those not parametrised by one of our model names).
TorchScript tests are out of scope and deselected (``-k "not torchscript"``, joined to any ``-k``
given). Nothing else of the suite is changed. The timeouts the test file reads from ``$TIMEOUT``
are raised to ``--timeout`` seconds (timm sizes them for its CI runners, not a shared 2-core CPU).

    python tools/timm_conformance.py                      # download, run, print the summary
    python tools/timm_conformance.py --sdist timm-1.0.31.tar.gz -- -x -k "fx and atto"

Exit status: pytest's (0 when every selected case passes).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Sequence

SUITE = "tests/test_models.py"
MARKERS = ("base", "cfg", "cfg_nonstd", "forward", "backward", "features", "fxforward", "fxbackward", "torchscript")

CONFTEST = '''\
"""Written by tools/timm_conformance.py: restrict timm's model lists to the s4vision models."""
import timm

from s4vision.engine.factory import list_s4vision_models

OURS = set(list_s4vision_models())
_list_models, _list_pretrained = timm.list_models, timm.list_pretrained


def _ours(names):
    return [n for n in names if n.split(".")[0] in OURS]


def list_models(*args, **kwargs):
    return _ours(_list_models(*args, **kwargs))


def list_pretrained(*args, **kwargs):
    return _ours(_list_pretrained(*args, **kwargs))


timm.list_models, timm.list_pretrained = list_models, list_pretrained


def pytest_collection_modifyitems(config, items):
    """Keep the cases parametrised by one of our model names (not timm's fixed-model tests)."""
    keep, drop = [], []
    for item in items:
        name = item.callspec.params.get("model_name") if hasattr(item, "callspec") else None
        (keep if isinstance(name, str) and name.split(".")[0] in OURS else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
'''


def timm_version() -> str:
    import timm

    return timm.__version__


def download_sdist(version: str, directory: Path) -> Path:
    """``timm-<version>.tar.gz`` from the package registry, into ``directory``."""
    command = [sys.executable, "-m", "pip", "download", f"timm=={version}", "--no-deps", "--no-binary", ":all:",
               "--quiet", "--dest", str(directory)]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    found = sorted(directory.glob(f"timm-{version}.tar.gz"))
    if not found:
        raise SystemExit(f"pip download left no timm-{version}.tar.gz in {directory}")
    return found[0]


def extract_suite(sdist: Path, directory: Path) -> Path:
    """Copy ``tests/test_models.py`` of ``sdist`` into ``directory``."""
    with tarfile.open(sdist) as tar:
        member = next((m for m in tar.getmembers() if m.name.split("/", 1)[-1] == SUITE), None)
        if member is None:
            raise SystemExit(f"{sdist} has no {SUITE}")
        text = tar.extractfile(member).read().decode()
    target = directory / "test_models.py"
    target.write_text(text)
    return target


def our_additions() -> tuple[list[str], list[str]]:
    """(our model modules, our video models): what joins FEAT_INTER_FILTERS / NON_STD_FILTERS."""
    import timm

    from s4vision.engine.factory import list_s4vision_models

    names = list_s4vision_models()
    modules = sorted({timm.models.model_entrypoint(n).__module__.rsplit(".", 1)[-1] for n in names})
    video = [n for n in names if len(timm.models.get_pretrained_cfg(n).input_size) == 4]
    return modules, video


def add_to_list(text: str, list_name: str, items: Sequence[str]) -> str:
    """Prepend ``items`` to the module-level list literal ``list_name = [`` in ``text``."""
    anchor = f"\n{list_name} = ["
    if anchor not in text:
        raise SystemExit(f"{SUITE} has no list {list_name}: this timm version's suite needs a new adapter")
    print(f"{list_name} += {list(items)}")
    return text.replace(anchor, anchor + "".join(f"{item!r}, " for item in items), 1)


def prepare(directory: Path, sdist: Path) -> Path:
    """The suite, adapted to our models, with its conftest and pytest.ini, in ``directory``."""
    suite = extract_suite(sdist, directory)
    modules, video = our_additions()
    text = add_to_list(suite.read_text(), "FEAT_INTER_FILTERS", modules)
    if video:
        text = add_to_list(text, "NON_STD_FILTERS", video)
    suite.write_text(text)
    (directory / "conftest.py").write_text(CONFTEST)
    (directory / "pytest.ini").write_text("[pytest]\nmarkers =\n" + "".join(f"    {m}\n" for m in MARKERS))
    return suite


def without_torchscript(pytest_args: Sequence[str]) -> list[str]:
    """``pytest_args`` with the TorchScript tests deselected (joined to the user's own ``-k``,
    since pytest keeps only the last ``-k``)."""
    args = list(pytest_args)
    if "-k" in args[:-1]:
        i = args.index("-k")
        args[i + 1] = f"({args[i + 1]}) and not torchscript"
        return args
    return ["-k", "not torchscript", *args]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdist", type=Path, help="use this timm source distribution instead of downloading it")
    parser.add_argument("--keep", type=Path, help="write the adapted suite here (default: a temporary directory)")
    parser.add_argument("--timeout", type=int, default=900, help="per-test timeout in seconds (default: 900)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="timm_conformance_") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        version = timm_version()
        sdist = args.sdist or download_sdist(version, Path(tmp))
        print(f"timm {version}: {sdist.name}", flush=True)
        suite = prepare(work, sdist)
        env = dict(os.environ, TIMEOUT=str(args.timeout))
        command = [sys.executable, "-m", "pytest", str(suite), "-q", "-p", "no:cacheprovider", "-rfE",
                   *without_torchscript(args.pytest_args)]
        print("$", " ".join(command), flush=True)
        return subprocess.run(command, cwd=work, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())
