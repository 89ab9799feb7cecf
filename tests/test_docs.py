"""The README stays an entry point: short, its Layout names every module and script, and no link of it or of docs/
points at a missing file."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PACKAGES = ["engine", "renderer", "data", "data/masks", "models", "losses", "metrics", "tasks", "scripts"]


def _layout() -> str:
    text = README.read_text(encoding="utf-8")
    return text.split("## Layout", 1)[1].split("\n## ", 1)[0]


def test_readme_is_short():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 180


def test_layout_names_every_module_and_script():
    layout = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", _layout()))
    missing = [f"{pkg}/{p.name}" for pkg in PACKAGES for p in sorted((ROOT / pkg).glob("*.py"))
               if p.stem != "__init__" and p.stem not in layout]
    assert not missing, f"README Layout does not name: {', '.join(missing)}"


def test_relative_links_in_readme_and_docs_exist():
    broken = []
    for md in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        text = re.sub(r"<!--.*?-->", "", md.read_text(encoding="utf-8"), flags=re.S)  # slots other helpers fill
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" not in target and not (md.parent / target).exists():
                broken.append(f"{md.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_code_cites_docs_that_exist():
    cited = set()
    for py in ROOT.rglob("*.py"):
        if ".venv" not in py.parts:
            cited |= set(re.findall(r"docs/[A-Za-z0-9_]+\.md", py.read_text(encoding="utf-8")))
    assert cited and all((ROOT / c).is_file() for c in cited), sorted(cited)
