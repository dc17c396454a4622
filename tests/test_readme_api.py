"""The README promises only what the code has: its API table imports, its links resolve.

The "## Public API" table has rows ``| `module` | names |``. A name is backticked, possibly with
a signature (``fft_conv(u, k, causal=True)``: the name is ``fft_conv``) and possibly followed by
``(with `a`, `b`)``, attributes of that name. A module may carry a note (``s4vision.ops`` (N-d)).
The ``command line`` row lists ``s4vision`` commands, checked against the CLI's parser.
"""
import argparse
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _section(text, title):
    """The lines of the ``## title`` section of a markdown text."""
    lines = text.splitlines()
    start = lines.index(f"## {title}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def _items(cell):
    """``[(name, [attribute, ...]), ...]`` from a names cell: backticked names at the top level,
    attributes from a following ``(with `a`, `b`)``; other parenthesised notes are skipped."""
    items, depth, note = [], 0, ""
    for token in re.findall(r"`[^`]*`|\(|\)|[^`()]+", cell):
        if token == "(":
            depth, note = depth + 1, ""
        elif token == ")":
            depth -= 1
        elif token.startswith("`"):
            name = token.strip("`").split("(")[0].strip()
            if depth == 0:
                items.append((name, []))
            elif note.strip().startswith("with") and items:
                items[-1][1].append(name)
        elif depth:
            note += token
    return items


def _api_rows():
    """``[(module or "command line", names cell), ...]`` from the Public API table."""
    rows = []
    for line in _section(README.read_text(), "Public API"):
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or cells[0] in ("module", "") or set(cells[0]) <= set("-: "):
            continue
        match = re.fullmatch(r"`([\w.]+)`(?:\s*\(.*\))?", cells[0])
        rows.append((match.group(1) if match else cells[0], cells[1]))
    return rows


def _api_names():
    return [
        pytest.param(module, name, attributes, id=f"{module}.{name}")
        for module, cell in _api_rows()
        if module != "command line"
        for name, attributes in _items(cell)
    ]


def test_the_api_table_is_found():
    rows = _api_rows()
    assert len(rows) >= 5 and any(module == "command line" for module, _ in rows)
    assert all(module == "command line" or module.startswith("s4vision") for module, _ in rows)


def test_items_parser():
    cell = "`f(u, k=1)`, `G` (with `a`, `b`), timm families `H` (2D/3D); `zoo`"
    assert _items(cell) == [("f", []), ("G", ["a", "b"]), ("H", []), ("zoo", [])]


@pytest.mark.parametrize("module,name,attributes", _api_names())
def test_api_name_is_exported(module, name, attributes):
    mod = importlib.import_module(module)
    assert hasattr(mod, name), f"{module} has no {name}"
    assert name in getattr(mod, "__all__", ()), f"{name} is not in {module}.__all__"
    for attribute in attributes:
        assert hasattr(getattr(mod, name), attribute), f"{module}.{name} has no {attribute}"


def _subcommands(parser):
    """``{name: subparser}`` of an argparse parser (empty if it has none)."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _commands():
    cell = next(cell for module, cell in _api_rows() if module == "command line")
    return re.findall(r"`s4vision ([^`]*)`", cell)


@pytest.mark.parametrize("command", _commands())
def test_cli_command_exists(command):
    """``s4vision video extract-features``: subcommand ``video``, then ``extract-features``; every
    ``--option`` shown belongs to the innermost one."""
    from s4vision.cli import build_parser

    parser = build_parser()
    for word in command.split():
        commands = _subcommands(parser)
        if not commands:
            break
        assert word in commands, f"{word!r} is not a command of {parser.prog!r}; valid: {sorted(commands)}"
        parser = commands[word]
    assert not _subcommands(parser), f"{command!r} stops before a subcommand of {parser.prog!r}"
    options = {s for action in parser._actions for s in action.option_strings}
    for option in re.findall(r"(?<!\S)--?[\w-]+", command):
        assert option in options, f"{parser.prog!r} has no option {option}"


# -- links -------------------------------------------------------------------------------------


def github_anchor(heading):
    """GitHub's anchor for a heading: markup removed, lower case, punctuation other than ``-``
    and ``_`` dropped, spaces turned into ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = re.sub(r"[`*]", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path):
    """The anchors of a markdown file's headings (repeated headings get ``-1``, ``-2``, ...)."""
    anchors, seen, fenced = set(), {}, False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            anchor = github_anchor(match.group(1))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            anchors.add(anchor if count == 0 else f"{anchor}-{count}")
    return anchors


def test_github_anchor():
    assert github_anchor("N-d layers (`tools/bench_nd.py`)") == "n-d-layers-toolsbench_ndpy"
    assert github_anchor("The main job: zero-shot resolution change (`make demo`)") == (
        "the-main-job-zero-shot-resolution-change-make-demo"
    )
    assert github_anchor("Models (timm)") == "models-timm"


def _readme_links():
    """Relative link targets ``path#anchor`` of README.md, outside code blocks and spans."""
    text = re.sub(r"```.*?```", "", README.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)
    return sorted({t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)})


def _check_target(target, base):
    path, _, anchor = target.partition("#")
    file = (base / path).resolve() if path else README
    assert file.exists(), f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}"
    if anchor and file.suffix == ".md":
        assert anchor in _anchors(file), f"{target}: no heading with anchor #{anchor} in {file.name}"


@pytest.mark.parametrize("target", _readme_links())
def test_readme_link_resolves(target):
    _check_target(target, ROOT)


def _anchor_mentions():
    """``(file, "README.md#anchor")`` for every mention of a README or docs/ anchor in the
    package, tools, configs, the model zoo and the docs (e.g. "see README.md#model-zoo")."""
    places = [ROOT / d for d in ("s4vision", "tools", "configs", "model_zoo", "docs")]
    suffixes = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg"}
    found = []
    for place in places:
        for file in sorted(place.rglob("*")) if place.exists() else []:
            if file.suffix in suffixes and file.is_file():
                for target in set(re.findall(r"(?:README\.md|docs/[\w.-]+\.md)#[\w-]+", file.read_text())):
                    found.append((str(file.relative_to(ROOT)), target))
    return found


@pytest.mark.parametrize("where,target", _anchor_mentions())
def test_anchor_mentions_resolve(where, target):
    _check_target(target, ROOT)
