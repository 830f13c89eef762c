"""The course's figures render offline: every image a notebook shows is embedded, and each has a source.

Concept diagrams are drawn by tools/figures/*.py and embedded by tools/draw_figures.py as markdown-cell
attachments. These tests check the notebooks as committed: no remote, local-file or missing images;
every attachment comes from a drawing function that still draws; and an HTML export carries them.
"""
import base64
import io
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from draw_figures import ATTACHMENT_REF  # noqa: E402
from figures import load_all  # noqa: E402
from figures.style import to_png  # noqa: E402

NOTEBOOKS = sorted(p for p in ROOT.glob("*/*.ipynb") if not p.parent.name.startswith("."))
IDS = [p.relative_to(ROOT).as_posix() for p in NOTEBOOKS]
MAIN_NOTEBOOKS = ["appendix_pytorch/appendix.ipynb"] + [
    f"{folder}/{folder[:4]}.ipynb" for folder in
    ["ch02_text_data", "ch03_attention", "ch04_gpt_model", "ch05_pretraining", "ch06_classification",
     "ch07_instruction"]
]
MIN_FIGURES = 8

# ![alt](target); the alt text may hold balanced brackets (`batch[0]`), as CommonMark allows
MARKDOWN_IMAGE = re.compile(r"!\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)")
HTML_IMAGE = re.compile(r"<img\b[^>]*?\bsrc\s*=\s*[\"']([^\"']+)", re.I)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    assert data.startswith(PNG_SIGNATURE), "not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def image_targets(cell: dict) -> list[str]:
    """Every image source a cell's markdown or HTML output points at."""
    if cell["cell_type"] == "markdown":
        src = "".join(cell["source"])
        return MARKDOWN_IMAGE.findall(src) + HTML_IMAGE.findall(src)
    targets = []
    for out in cell.get("outputs", []):
        for mime in ("text/html", "text/markdown"):
            targets += HTML_IMAGE.findall("".join(out.get("data", {}).get(mime, "")))
    return targets


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_images_are_embedded_never_remote_or_missing(path):
    for i, cell in enumerate(cells(path)):
        for target in image_targets(cell):
            assert target.startswith("attachment:"), (
                f"cell {i} shows {target!r}: a remote or local-file image does not render offline or in "
                "Colab; draw it in tools/figures and embed it with tools/draw_figures.py")
            name = target[len("attachment:"):]
            attachment = cell.get("attachments", {}).get(name)
            assert attachment, f"cell {i} references attachment {name!r}, which the cell does not carry"
            (mime, data), = attachment.items()
            assert mime == "image/png"
            png_size(base64.b64decode(data))  # a real PNG
        shown = {t[len("attachment:"):] for t in image_targets(cell)}
        unused = set(cell.get("attachments", {})) - shown
        assert not unused, f"cell {i} carries attachments it does not show: {sorted(unused)}"


def test_main_notebooks_have_their_figures():
    for rel in MAIN_NOTEBOOKS:
        names = {n for c in cells(ROOT / rel) for n in ATTACHMENT_REF.findall("".join(c["source"]))
                 if c["cell_type"] == "markdown"}
        assert len(names) >= MIN_FIGURES, f"{rel} shows {len(names)} concept diagrams, fewer than {MIN_FIGURES}"


def test_every_embedded_figure_has_a_drawing_function_that_draws_it():
    specs = load_all()
    embedded: dict[str, tuple[str, bytes]] = {}
    for path in NOTEBOOKS:
        rel = path.relative_to(ROOT).as_posix()
        for cell in cells(path):
            for key, att in cell.get("attachments", {}).items():
                embedded[key.removesuffix(".png")] = (rel, base64.b64decode(att["image/png"]))
    assert set(embedded) == set(specs), (
        f"embedded without a drawing function: {sorted(set(embedded) - set(specs))}; "
        f"drawn but not embedded: {sorted(set(specs) - set(embedded))} (run tools/draw_figures.py)")
    for name, spec in specs.items():
        notebook, data = embedded[name]
        assert notebook == spec.notebook, f"{name} is registered for {spec.notebook} but shown in {notebook}"
        # Pixels may differ between font builds; the size must not (a changed drawing changes its size
        # or its bytes, and the size is what a machine-independent test can hold it to).
        assert png_size(to_png(spec.draw())) == png_size(data), f"{name}: the embedded image is stale"


def test_draw_tool_reports_a_misplaced_reference(tmp_path, monkeypatch):
    import draw_figures

    nb = {"cells": [{"cell_type": "markdown", "id": "x", "metadata": {},
                     "source": ["![a](attachment:no_such_figure.png)"]}], "metadata": {},
          "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "ch99").mkdir()
    (tmp_path / "ch99" / "a.ipynb").write_text(json.dumps(nb))
    monkeypatch.setattr(draw_figures, "ROOT", tmp_path)
    problems = draw_figures.unregistered_references(load_all())
    assert problems == ["ch99/a.ipynb cell 0: attachment no_such_figure.png has no drawing function"]


@pytest.mark.parametrize("rel", MAIN_NOTEBOOKS)
def test_html_export_inlines_every_figure(rel):
    nbformat = pytest.importorskip("nbformat")
    from nbconvert import HTMLExporter

    nb = nbformat.read(io.StringIO((ROOT / rel).read_text(encoding="utf-8")), as_version=4)
    html, _ = HTMLExporter().from_notebook_node(nb)
    for name in {n for c in nb.cells if c.cell_type == "markdown" for n in ATTACHMENT_REF.findall(c.source)}:
        assert f"attachment:{name}.png" not in html, f"{name} left as an unresolved attachment link"
    inlined = html.count('src="data:image/png;base64,')
    figures = sum(len(c.get("attachments", {})) for c in nb.cells)
    assert inlined >= figures, f"the HTML export shows {inlined} images, the notebook embeds {figures}"
