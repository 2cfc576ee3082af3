"""README and docs/: short README for users, no words about the machines of earlier runs, no broken
relative links (files and #anchors), CI installs as README says, every BENCH_ variable documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
#: Words about the machines earlier figures came from, which mean nothing to a reader.
BANNED = re.compile(r"this box|slower box|\bsessions?\b|\blent\b", re.IGNORECASE)


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # a '#' in a code block is no heading
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)}


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= 250, f"README.md has {n} lines; move detail to docs/ (at most 250)"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_pages_speak_to_users(page):
    hits = [f"{i}: {line.strip()}" for i, line in enumerate(page.read_text().splitlines(), 1) if BANNED.search(line)]
    assert not hits, f"{page.name} talks about the machines of earlier runs: {hits}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{page.name}: broken links {broken}"


def test_link_checker_catches_a_broken_link(tmp_path):
    """The checks above can fail: a missing file and a missing heading are both found."""
    (tmp_path / "a.md").write_text("# Title\n## What `bench run` leaves behind\n")
    assert _anchors(tmp_path / "a.md") == {"title", "what-bench-run-leaves-behind"}
    assert LINK.findall("see [x](docs/x.md#y) and [web](https://e.org)") == ["docs/x.md#y", "https://e.org"]
    assert BANNED.search("measured on this box") and BANNED.search("when one is lent")
    assert not BANNED.search("an equivalent run")


def test_ci_installs_as_readme_says():
    ci = (REPO / ".ci" / "run").read_text()
    install = re.search(r"pip install -q (-e '[^']+')", ci).group(1)
    quick = re.findall(r"^python3\.11 -m venv \.venv && \.venv/bin/pip install (-e '[^']+') && (.+)$",
                       README.read_text(), flags=re.M)
    assert len(quick) == 2, "README's quick start is two commands: run, and test"
    assert quick[1] == (install, ".venv/bin/pytest"), (quick, install)
    # The first command installs faiss for the CPU, which the default grid's neighbour defenses need.
    assert "cpu" in quick[0][0] and quick[0][1] == ".venv/bin/bench run"


def test_every_bench_variable_is_documented():
    used = set()
    for pattern in ("bench/**/*.py", "attacks/*.py", "defenses/*.py", "tests/*.py", ".ci/run", "tox.ini"):
        for path in REPO.glob(pattern):
            used |= set(re.findall(r"\bBENCH_[A-Z_]+[A-Z]\b", path.read_text()))
    documented = " ".join(p.read_text() for p in PAGES)
    assert len(used) >= 10
    missing = sorted(v for v in used if v not in documented)
    assert not missing, f"undocumented environment variables: {missing}"


def test_glossary_names_every_builtin_method():
    import attacks
    import defenses

    text = README.read_text()
    glossary = text[text.index("## Glossary"):text.index("## Where things live")]
    names = [n for reg in (attacks.ATTACKS, defenses.DEFENSES) for n, _ in reg.items() if reg.origin(n) == "builtin"]
    missing = [n for n in names if f"`{n}`" not in glossary]
    assert len(names) > 30 and not missing, f"README's glossary lacks {missing}"
    for term in ("RMC", "RIDE", "D'", "**K**", "**N'**", "GMSA", "FPA", "BPDA", "EOT"):
        assert term in glossary, term
