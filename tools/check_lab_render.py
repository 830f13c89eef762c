#!/usr/bin/env python3
"""Open notebooks in a real JupyterLab, in headless Chromium, and check that every figure renders.

The test suite checks the notebook files and an nbconvert HTML export (tests/test_figures.py); this
maintainer tool checks the last step, the browser: each `![alt](attachment:NAME.png)` must become an
<img> that loaded (naturalWidth > 0) inside a rendered markdown cell.

It needs what the course does not: Playwright for Python and a Chromium (`pip install playwright`, and
`apt-get install chromium` or `playwright install chromium`). Run it from the repository's virtualenv:

    python tools/check_lab_render.py                         # the seven main notebooks
    python tools/check_lab_render.py ch03_attention/ch03.ipynb --chromium /usr/bin/chromium
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAIN_NOTEBOOKS = ["appendix_pytorch/appendix.ipynb", "ch02_text_data/ch02.ipynb", "ch03_attention/ch03.ipynb",
                  "ch04_gpt_model/ch04.ipynb", "ch05_pretraining/ch05.ipynb",
                  "ch06_classification/ch06.ipynb", "ch07_instruction/ch07.ipynb"]
ALT = re.compile(r"!\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(attachment:")
RENDERED_ALTS = """() => Array.from(document.querySelectorAll('.jp-RenderedMarkdown img'))
    .filter(img => img.complete && img.naturalWidth > 0).map(img => img.alt)"""


def expected_alts(notebook: str) -> set[str]:
    """Alt texts of the attachment images a notebook's markdown cells show."""
    cells = json.loads((ROOT / notebook).read_text(encoding="utf-8"))["cells"]
    return {alt for c in cells if c["cell_type"] == "markdown" for alt in ALT.findall("".join(c["source"]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", default=MAIN_NOTEBOOKS, help="paths from the repository root")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"),
                        help="Chromium executable (default: from PATH; Playwright's own if none)")
    parser.add_argument("--port", type=int, default=8899)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        # Render every cell at once (JupyterLab 4 otherwise renders only the cells near the viewport).
        settings = Path(tmp, "settings", "@jupyterlab", "notebook-extension")
        settings.mkdir(parents=True)
        (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
        env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(Path(tmp, "settings")),
                   JUPYTERLAB_WORKSPACES_DIR=str(Path(tmp, "workspaces")))
        lab = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={args.port}", "--allow-root",
             "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={ROOT}"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        failures = 0
        try:
            time.sleep(15)
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=args.chromium,
                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--no-first-run"])
                for notebook in args.notebooks:
                    expected = expected_alts(notebook)
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.goto(f"http://127.0.0.1:{args.port}/lab/tree/{notebook}?reset")
                    page.wait_for_selector(".jp-Notebook", timeout=60_000)
                    seen: set[str] = set()
                    for _ in range(60):  # wait until every image has loaded (or 30 s)
                        seen = set(page.evaluate(RENDERED_ALTS))
                        if expected <= seen:
                            break
                        time.sleep(0.5)
                    missing = sorted(expected - seen)
                    failures += bool(missing)
                    print(f"{notebook}: {len(expected & seen)} of {len(expected)} figures rendered"
                          + (f"; missing: {[m[:60] for m in missing]}" if missing else ""))
                    page.close()
                browser.close()
        finally:
            lab.terminate()
            lab.wait(timeout=30)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
