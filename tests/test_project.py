"""Consistency of the project's files: dependencies, notebooks' setup cells and badges."""

import json
import re
import tomllib
from pathlib import Path

import pytest

import cifarsep_lib

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def test_five_notebooks_in_order():
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_", "05_"]


def test_environment_yml_matches_pyproject_and_lock():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in ("tensorflow", "notebooks", "test"):
        wanted |= {_name(r) for r in project["optional-dependencies"][extra]}
    lock = dict(
        line.lower().split("==") for line in (ROOT / "requirements-lock.txt").read_text().splitlines() if "==" in line
    )
    pin = re.compile(r"^\s*-\s*([A-Za-z0-9_.-]+)==(\S+)", re.M)
    env_pins = {name.lower(): v for name, v in pin.findall((ROOT / "environment.yml").read_text())}
    assert wanted <= set(env_pins), f"missing from environment.yml: {sorted(wanted - set(env_pins))}"
    for name, version in env_pins.items():
        assert lock.get(name) == version, f"{name}: environment.yml {version}, lock {lock.get(name)}"


def _cells(path):
    return json.loads(path.read_text())["cells"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_badge_setup_and_parameters(path):
    cells = _cells(path)
    first_md = "".join(cells[0]["source"])
    badge = f"colab.research.google.com/github/{cifarsep_lib.REPO_URL.removeprefix('https://github.com/')}"
    assert f"{badge}/blob/main/notebooks/{path.name}" in first_md
    code = [c for c in cells if c["cell_type"] == "code"]
    setup = "".join(code[0]["source"])
    assert "google.colab" in setup and f"git+{cifarsep_lib.REPO_URL}" in setup
    assert "parameters" in code[1].get("metadata", {}).get("tags", [])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_committed_with_outputs_and_no_errors(path):
    code = [c for c in _cells(path) if c["cell_type"] == "code"]
    assert any(c.get("outputs") for c in code), "notebook committed without outputs"
    for cell in code:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", "".join(cell["source"])[:80]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_do_not_use_conv2d_layers(path):
    source = "\n".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "code")
    assert not re.search(r"layers\.Conv2D\(", source)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_markdown_cells_hold_no_control_characters(path):
    # LaTeX written into the JSON by hand loses its backslash: "\text" read as JSON is a tab
    # followed by "ext", "\frac" a form feed, "\beta" a backspace; the formula then renders broken.
    for index, cell in enumerate(_cells(path)):
        if cell["cell_type"] == "markdown":
            text = "".join(cell["source"])
            assert not re.search(r"[\x00-\x09\x0b-\x1f]", text), f"cell {index}: {text[:80]!r}"


def test_lab_journal_links_every_benchmark_output_and_only_existing_ones():
    journal = (ROOT / "benchmarks" / "README.md").read_text()
    linked = set(re.findall(r"\]\(([\w.-]+\.txt)\)", journal))
    present = {p.name for p in (ROOT / "benchmarks").glob("*.txt")}
    assert present - linked == set(), "benchmark outputs missing from benchmarks/README.md"
    assert linked - present == set(), "benchmarks/README.md links files that do not exist"


def test_readme_names_every_model_the_command_line_accepts():
    from cifarsep_lib import models

    readme = (ROOT / "README.md").read_text()
    assert [name for name in models.MODELS if f"`{name}`" not in readme] == []


def _github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _markdown_sources():
    for path in (ROOT / "README.md", ROOT / "benchmarks" / "README.md"):
        yield path, path.read_text()
    for path in NOTEBOOKS:
        yield path, "\n".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "markdown")


def test_links_to_sections_of_markdown_files_name_existing_headings():
    # Journal sections are renamed as runs come in; a stale anchor still opens the page,
    # just at the top, so nothing else would notice.
    checked = 0
    for path, text in _markdown_sources():
        for target, anchor in re.findall(r"\]\(([\w./-]*\.md)#([\w-]+)\)", text):
            target_path = (path.parent / target).resolve()
            headings = re.findall(r"^#+ (.+)$", target_path.read_text(), re.M)
            assert anchor in {_github_anchor(h) for h in headings}, f"{path.name}: {target}#{anchor}"
            checked += 1
    assert checked >= 3
