"""mtssl report: PNG figures and a self-contained HTML page whose every image is an embedded PNG."""
from __future__ import annotations

import base64
import io
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from mtssl.cli.app import main
from tiny_run import tiny_run


class ImageCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []
        self.headings: list[str] = []
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])
        self._in_heading = tag in {"h3"}

    def handle_data(self, data):
        if self._in_heading:
            self.headings.append(data)
            self._in_heading = False


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = tiny_run(tmp_path_factory)
    result = CliRunner().invoke(main, ["report", str(run), "--seg-test", "synthetic:n=4,domain=2",
                                       "--cls-test", "synthetic:n=8"])
    assert result.exit_code == 0, result.output
    return run / "report" / "index.html"


def test_report_page_embeds_every_figure(report):
    parser = ImageCollector()
    parser.feed(report.read_text())
    pngs = sorted(report.parent.glob("*.png"))
    assert len(parser.sources) == len(pngs) >= 7
    for src in parser.sources:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix):])))
        image.load()
        assert image.format == "PNG" and min(image.size) >= 200
    titles = " | ".join(parser.headings)
    for expected in ("Training curves", "ROC curve", "confusion matrix", "Bland-Altman", "saliency (cls→seg, fed to seg) "
                     "maps by predicted class", "boundaries", "best and worst", "calibration", "misclassified"):
        assert expected in titles, titles


def test_report_figures_are_real_pictures(report):
    for png in report.parent.glob("*.png"):
        assert png.stat().st_size > 5000, png
        colours = Image.open(png).convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 20, png  # more than a blank canvas


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="no headless chromium")
def test_report_renders_in_a_browser(report, tmp_path):
    shot = tmp_path / "page.png"
    subprocess.run(["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={shot}", "--window-size=1200,2000", report.as_uri()],
                   check=True, timeout=120, capture_output=True)
    page = Image.open(shot).convert("RGB")
    assert page.size == (1200, 2000)
    # The embedded figures were decoded and drawn: a blank or text-only page has few colours.
    colours = page.getcolors(maxcolors=1 << 22)
    assert colours is None or len(colours) > 200
