"""Every committed notebook follows the course conventions (CONTRIBUTING.md) and carries a full run."""
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from export_modules import EXPORT_MARK, EXPORTS  # noqa: E402

NOTEBOOKS = sorted(p for p in ROOT.glob("*/*.ipynb") if not p.parent.name.startswith("."))
IDS = [p.relative_to(ROOT).as_posix() for p in NOTEBOOKS]


def code_cells(path: Path) -> list[dict]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 7


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_first_cells_follow_the_convention(path):
    cells = code_cells(path)
    first, second = "".join(cells[0]["source"]), "".join(cells[1]["source"])
    assert first.startswith("# NBVAL_SKIP"), "cell 1 must start with # NBVAL_SKIP (versions + Colab bootstrap)"
    assert "google.colab" in first and f'"{path.parent.name}"' in first, "Colab bootstrap must enter this folder"
    assert re.search(r'SMOKE_TEST = os.environ.get\("SMOKE_TEST", "0"\) not in \("", "0"\)', second)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_outputs_come_from_one_full_run(path):
    cells = code_cells(path)
    counts = [c["execution_count"] for c in cells]
    assert counts == list(range(1, len(cells) + 1)), "re-run the notebook from a fresh kernel"
    for i, cell in enumerate(cells):
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"code cell {i} has an error output"
            text = "".join(out.get("text", ""))
            assert "SMOKE_TEST: True" not in text and "SMOKE_TEST = True" not in text, f"code cell {i}: smoke run"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_export_cells_only_in_notebooks_the_export_tool_knows(path):
    has_export = any("".join(c["source"]).split("\n", 1)[0].strip() == EXPORT_MARK for c in code_cells(path))
    known = path.relative_to(ROOT).as_posix() in {nb for nb, _ in EXPORTS}
    assert has_export == known, "a notebook has # export cells exactly when tools/export_modules.py maps it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_names_the_python3_kernel(path):
    # Without a kernelspec JupyterLab asks for a kernel and marks the notebook modified on open.
    metadata = json.loads(path.read_text(encoding="utf-8"))["metadata"]
    assert metadata.get("kernelspec", {}).get("name") == "python3", "metadata.kernelspec must name python3"
    assert metadata["kernelspec"].get("language") == "python" and metadata["kernelspec"].get("display_name")
    assert metadata.get("language_info", {}).get("name") == "python", "metadata.language_info.name must be python"
