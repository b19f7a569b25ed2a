"""Every number in the README's results table is read from the file its row links to (or a table of
that file's folder), so that a table left stale after a re-measurement fails here."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# a decimal number; a minus sign only where it is one (not the dash of a range such as 0.80x-0.93x)
NUMBER = re.compile(r"(?:(?<=[\s(])-)?\d+\.\d+")


def _rows() -> list[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Results measured here")
    section = text[start:text.index("\n## ", start + 1)]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| what")]
    assert len(rows) >= 5, "the README's results table was not found"
    return rows


def _backing_text(link: str) -> str:
    target = ROOT / link
    assert target.exists(), f"the results table links to {link}, which does not exist"
    folder = target if target.is_dir() else target.parent
    files = [target] if target.is_file() else []
    files += [p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in (".md", ".json", ".csv")]
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)


@pytest.mark.parametrize("row", _rows(), ids=lambda row: row[0][:40])
def test_every_number_of_a_results_row_is_in_its_backing_file(row):
    link = re.search(r"\]\(([^)]+)\)", row[-1]).group(1)
    backing = _backing_text(link)
    numbers = NUMBER.findall(" ".join(row[:-1]))
    assert numbers, f"no number in the row {row[0]!r}"
    missing = [n for n in numbers if n not in backing]
    assert not missing, f"{missing} of the README's row {row[0]!r} are not in {link} (or its folder's tables)"
