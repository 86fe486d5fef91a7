"""The documentation site: its code runs, it builds strictly, and it documents every public name.

* Every ```` ```python ```` block of ``docs/**/*.md`` and ``README.md`` is executed. The
  blocks of one file run in order in one namespace, in a temporary directory, like a
  reader pasting them into one session. Two markers, written as an HTML comment on the
  line just above a block, change that:

  - ``<!-- docs-test: skip (reason) -->``: not run (a fragment of a framework's trainer);
  - ``<!-- docs-test: requires MODULE -->``: run on its own, in a fresh namespace, only
    where ``MODULE`` imports (otherwise the test is skipped).

  ``<!-- docs-test: setup ... -->`` holds hidden code run before the next block (names
  that a README fragment assumes).
* ``mkdocs build --strict`` succeeds, and its object inventory holds every name of
  ``coba_rl.__all__`` and of every public submodule's ``__all__``, read at run time.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import pkgutil
import re
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import coba_rl

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DOC_FILES = [
    p for p in [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"] if "```python" in p.read_text()
]

_FENCE = re.compile(r"^```python\s*$")
_MARKER = re.compile(r"^<!--\s*docs-test:\s*(skip|requires)\b\s*(.*?)\s*-->\s*$")
_SETUP = "<!-- docs-test: setup"


@dataclass(frozen=True)
class Block:
    """One fenced Python block of a Markdown file."""

    path: Path
    line: int  # 1-based line of the first code line
    code: str
    setup: str = ""
    skip: str | None = None  # the reason, when marked skip
    requires: str | None = None  # the module, when marked requires


def extract_blocks(path: Path, text: str) -> list[Block]:
    """The ```` ```python ```` blocks of ``text``, with their markers."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if not _FENCE.match(lines[i]):
            i += 1
            continue
        start = i + 1
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"{path}:{i + 1}: unterminated code block")
        above = "\n".join(lines[:i]).rstrip()
        last = above.splitlines()[-1] if above else ""
        marker = _MARKER.match(last)
        kind, arg = (marker.group(1), marker.group(2)) if marker else ("", "")
        start_setup = above.rfind(_SETUP)
        setup = ""
        if start_setup >= 0 and above.endswith("-->") and "```" not in above[start_setup:]:
            setup = above[start_setup:-3].split("\n", 1)[1]
        blocks.append(
            Block(
                path=path,
                line=start + 1,
                code="\n".join(lines[start:end]) + "\n",
                setup=setup,
                skip=(arg or "marked skip") if kind == "skip" else None,
                requires=arg.split()[0] if kind == "requires" and arg else None,
            )
        )
        i = end + 1
    return blocks


def _run(block: Block, namespace: dict[str, Any]) -> None:
    name = block.path.relative_to(ROOT).as_posix()
    if block.setup:
        exec(compile(block.setup, f"{name} (setup before line {block.line})", "exec"), namespace)
    exec(compile("\n" * (block.line - 1) + block.code, name, "exec"), namespace)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_extract_blocks_honours_markers() -> None:
    text = "\n".join(
        [
            "# t",
            "```python",
            "x = 1",
            "```",
            "<!-- docs-test: skip (needs a GPU) -->",
            "```python",
            "boom()",
            "```",
            "<!-- docs-test: requires verl -->",
            "```python",
            "import verl",
            "```",
            "<!-- docs-test: setup (hidden)",
            "y = 2",
            "-->",
            "```python",
            "z = y",
            "```",
            "```bash",
            "make test",
            "```",
        ]
    )
    blocks = extract_blocks(Path("t.md"), text)
    assert [b.code for b in blocks] == ["x = 1\n", "boom()\n", "import verl\n", "z = y\n"]
    assert [b.line for b in blocks] == [3, 7, 11, 17]
    assert [b.skip for b in blocks] == [None, "(needs a GPU)", None, None]
    assert [b.requires for b in blocks] == [None, None, "verl", None]
    assert blocks[3].setup == "y = 2\n"


def test_extract_blocks_rejects_unterminated_block() -> None:
    with pytest.raises(ValueError, match=r"t\.md:1: unterminated code block"):
        extract_blocks(Path("t.md"), "```python\nx = 1\n")


def test_every_doc_file_has_runnable_code() -> None:
    # guards the runner itself: a broken fence pattern would silently run nothing
    runnable = [b for p in DOC_FILES for b in extract_blocks(p, p.read_text()) if not b.skip]
    assert len(runnable) >= 20


@pytest.mark.parametrize("path", DOC_FILES, ids=_rel)
def test_code_blocks_run(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = [
        b for b in extract_blocks(path, path.read_text()) if b.skip is None and b.requires is None
    ]
    if not blocks:
        pytest.skip(f"{_rel(path)} has no plain Python blocks")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    for block in blocks:
        _run(block, namespace)


_FRAMEWORK_BLOCKS = [
    b for p in DOC_FILES for b in extract_blocks(p, p.read_text()) if b.requires is not None
]


@pytest.mark.parametrize(
    "block", _FRAMEWORK_BLOCKS, ids=lambda b: f"{_rel(b.path)}:{b.line}:{b.requires}"
)
def test_framework_code_blocks_run(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert block.requires is not None
    pytest.importorskip(block.requires)
    monkeypatch.chdir(tmp_path)
    _run(block, {"__name__": "__docs__"})


# -- the built site ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        pytest.importorskip(module)
    site = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return site


def read_inventory(path: Path) -> dict[str, tuple[int, str]]:
    """``{identifier: (priority, page)}`` from a Sphinx v2 ``objects.inv`` (mkdocstrings')."""
    data = path.read_bytes()
    offset = 0
    for _ in range(4):  # four header lines, then a zlib stream
        offset = data.index(b"\n", offset) + 1
    entries: dict[str, tuple[int, str]] = {}
    for line in zlib.decompress(data[offset:]).decode().splitlines():
        name, _role, priority, uri, _display = line.split(" ", 4)
        if name not in entries or int(priority) < entries[name][0]:
            entries[name] = (int(priority), uri.split("#", 1)[0])
    return entries


@functools.cache
def _public_modules() -> list[ModuleType]:
    """``coba_rl`` and every submodule whose dotted path has no ``_``-prefixed part."""
    modules = [coba_rl]
    for info in pkgutil.walk_packages(coba_rl.__path__, prefix="coba_rl."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        modules.append(importlib.import_module(info.name))
    return modules


def _candidates(module: ModuleType, name: str) -> set[str]:
    """Identifiers under which ``module.name`` counts as documented."""
    found = {f"{module.__name__}.{name}"}
    if name not in vars(module):  # built on first access by a module __getattr__
        return found
    obj = vars(module)[name]
    for other in _public_modules():  # a constant re-exported from the module defining it
        if name in getattr(other, "__all__", ()) and vars(other).get(name) is obj:
            found.add(f"{other.__name__}.{name}")
    if isinstance(obj, ModuleType):
        return {obj.__name__}
    owner, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(owner, str) and isinstance(qualname, str) and owner.startswith("coba_rl"):
        found.add(f"{owner}.{qualname}")
    return found


def test_every_public_name_is_in_the_reference(built_site: Path) -> None:
    inventory = read_inventory(built_site / "objects.inv")
    rendered = {k for k, (prio, _) in inventory.items() if prio == 1}
    missing: list[str] = []
    for module in _public_modules():
        if module is not coba_rl and module.__name__ not in rendered:
            missing.append(f"module {module.__name__}")
            continue
        names = getattr(module, "__all__", None)
        assert names is not None, f"public module {module.__name__} has no __all__"
        page = (built_site / inventory[module.__name__][1] / "index.html").read_text()
        for name in names:
            if _candidates(module, name) & rendered:
                continue
            # a name a module builds lazily (importing its framework) cannot be rendered
            # from source; it counts when its module's reference page names it
            if name not in vars(module) and re.search(rf"\b{re.escape(name)}\b", page):
                continue
            missing.append(f"{module.__name__}.{name}")
    assert not missing, (
        "public names missing from the API reference (add a ::: block under docs/reference/): "
        + ", ".join(missing)
    )


def test_reference_check_sees_a_missing_name() -> None:
    # the check above must be able to fail: an inventory without coba_rl.solvers.dp misses it
    rendered = {"coba_rl.solvers.greedy", "coba_rl.solvers.greedy_heap"}
    assert not _candidates(importlib.import_module("coba_rl.solvers"), "dp") & rendered


def test_built_site_has_every_page_and_figure(built_site: Path) -> None:
    for page in DOCS.rglob("*.md"):
        rel = page.relative_to(DOCS).with_suffix("")
        folder = rel.parent if rel.name == "index" else rel
        html = built_site / folder / "index.html"
        assert html.is_file(), f"{page.relative_to(ROOT)} was not built"
    changelog = (built_site / "changelog" / "index.html").read_text()
    assert "Keep a Changelog" in changelog  # the root CHANGELOG.md is included


# -- content checks -------------------------------------------------------------------------


def test_headline_numbers_are_quoted_from_the_performance_page() -> None:
    index = (DOCS / "index.md").read_text()
    section = index.split("## Headline numbers", 1)[1].split("\n## ", 1)[0]
    numbers = re.findall(r"\*\*([0-9][0-9.,]*x?)(?: ms)?\*\*", section)
    assert len(numbers) >= 4, "the home page's headline numbers were not found"
    performance = (DOCS / "performance.md").read_text()
    for number in numbers:
        assert number in performance, f"home page quotes {number}, not in docs/performance.md"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("script_name", ["make_concept_figures.py", "make_token_figures.py"])
def test_concept_figures_are_committed_and_regenerate(tmp_path: Path, script_name: str) -> None:
    script = DOCS / script_name
    spec = importlib.util.spec_from_file_location(script.stem, script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in module.FIGURES:
        assert (DOCS / "figures" / name).is_file(), f"docs/figures/{name} is not committed"
        assert f"figures/{name}" in "".join(p.read_text() for p in DOCS.rglob("*.md"))
    pytest.importorskip("matplotlib")
    paths = module.main(["--out", str(tmp_path)])
    assert [p.name for p in paths] == list(module.FIGURES)
    for path in paths:
        assert _png_size(path) == _png_size(DOCS / "figures" / path.name)


def test_docstring_rewriter() -> None:
    spec = importlib.util.spec_from_file_location(
        "griffe_docstrings", DOCS / "griffe_docstrings.py"
    )
    assert spec is not None and spec.loader is not None
    pytest.importorskip("griffe")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = "Sum.\n\n.. math::\n\n    a + b\n\nSee :func:`~coba_rl.f`.\n\nExample:\n  >>> 1\n  1"
    assert module.rewrite(text).splitlines() == [
        "Sum.",
        "",
        "$$",
        "a + b",
        "$$",
        "",
        "See `coba_rl.f`.",
        "",
        "Examples:",
        "  >>> 1",
        "  1",
    ]
    bare = "Shape.\n\n>>> f()\n(9.0, 2.0)\n\nMore."
    assert module.rewrite(bare).splitlines() == [
        "Shape.",
        "",
        "Examples:",
        "    >>> f()",
        "    (9.0, 2.0)",
        "",
        "More.",
    ]


def _project_texts() -> dict[str, str]:
    """Every source docstring/comment file and doc page a user reads (not the changelog)."""
    paths = [
        *sorted((ROOT / "src").rglob("*.py")),
        *sorted(p for p in DOCS.rglob("*.md") if p.name != "changelog.md"),
        ROOT / "README.md",
    ]
    return {str(p.relative_to(ROOT)): p.read_text() for p in paths}


def test_no_reference_to_an_unpublished_specification() -> None:
    # Users have the docs, not the rules' source text: cite the Rules page instead.
    for name, text in _project_texts().items():
        for n, line in enumerate(text.splitlines(), 1):
            assert not re.search(r"specification|spec section", line, re.IGNORECASE), (
                f"{name}:{n} cites a specification users do not have: {line.strip()!r}"
            )


def test_every_rules_anchor_cited_exists() -> None:
    # Docstrings of private helpers are not rendered, so mkdocs cannot check their links.
    anchors = set(re.findall(r"\{#(rules-[a-z0-9-]+)\}", (DOCS / "rules.md").read_text()))
    assert len(anchors) >= 25
    cited = 0
    for name, text in _project_texts().items():
        for anchor in re.findall(r"(?:\]\[|rules\.md#)(rules-[a-z0-9-]+)", text):
            assert anchor in anchors, f"{name} cites #{anchor}, which docs/rules.md lacks"
            cited += 1
    assert cited >= 15
