import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from leaderboard_records import make_record
from PIL import Image, ImageFilter
from skimage import data as skdata

from brainbench.leaderboard.render import load_leaderboards
from brainbench.leaderboard.report import build_report, find_gallery_runs
from brainbench.leaderboard.store import append_row

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)
B2I = "retrieval_b2i_top1_subset300/world-clip:v1.clip_tokens@v1"
TWO_WAY = "identification_2way/world-clip:v1.clip_image@v1"
CORR = "corrdist/effnet_lite0@v1"
STIMULI = {
    "astronaut": skdata.astronaut,
    "coffee": skdata.coffee,
    "chelsea": skdata.chelsea,
    "rocket": skdata.rocket,
}


def record(run_id, method, **changes):
    return make_record(run_id, method=method, **changes)


def fake_recons(folder, degrade, keys):
    """skimage.data photos as ground truth, degraded copies as the 'reconstructions'."""
    folder.mkdir(parents=True)
    for key in keys:
        image = Image.fromarray(STIMULI[key]()).convert("RGB").resize((96, 96))
        image.save(folder / f"gt_{key}.png")
        degrade(image).save(folder / f"{key}.png")


def noisy(image):
    rng = np.random.default_rng(0)
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-60, 60, size=(96, 96, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture
def fixture_dirs(tmp_path):
    boards, runs = tmp_path / "leaderboards", tmp_path / "runs"
    csv = boards / "world-nsd" / "retrieval.csv"
    append_row(csv, record("run-ridge", "ridge").to_row({B2I: 0.21, TWO_WAY: 0.95, CORR: 0.62}))
    append_row(csv, record("run-lite", "litemind").to_row({B2I: 0.16, TWO_WAY: 0.97, CORR: 0.55}))
    god = record("run-god", "ridge", dataset="world-god", split="god-test/test")
    append_row(boards / "world-god" / "zeroshot.csv", god.to_row({B2I: 0.5}))
    (boards / "reported").mkdir()
    shutil.copy(
        Path(__file__).resolve().parents[1] / "leaderboards" / "reported" / "nsd.csv", boards / "reported"
    )
    fake_recons(
        runs / "run-ridge" / "recons", lambda im: im.filter(ImageFilter.GaussianBlur(3)), list(STIMULI)
    )
    fake_recons(runs / "run-lite" / "recons", noisy, ["astronaut", "coffee", "chelsea"])  # no rocket
    (runs / "run-god").mkdir()  # a run that saved no reconstructions
    return boards, runs


def test_report_files_tables_plots_and_gallery(fixture_dirs, tmp_path):
    boards, runs = fixture_dirs
    index = build_report(boards, runs, tmp_path / "report")
    page = index.read_text()
    assert "<script" not in page and "<style>" in page
    # world-god (1), world-nsd (3), nsd reconstruction as reported (3), nsd retrieval as reported (1)
    assert page.count("<table class='board'>") == 8
    assert "<td><strong>0.210</strong></td>" in page and "<td><strong>0.550</strong></td>" in page  # ↑ and ↓
    assert "<code>corrdist</code> ↓" in page and "0.003 (1/300)" in page
    plots = sorted((tmp_path / "report" / "plots").glob("*.png"))
    assert len(plots) == 8 and all(Image.open(p).size[0] > 300 for p in plots)
    gallery = page[page.index("<h2 id='gallery'>") :]
    assert "No reconstructions saved for: world-god." in gallery
    srcs = re.findall(r"<img src='([^']+)'", gallery)
    assert len(srcs) == 4 + 4 + 3  # ground truth for 4 stimuli, ridge 4, litemind 3 (rocket missing)
    assert all((tmp_path / "report" / src).is_file() for src in srcs)
    assert "<td>—</td>" in gallery and gallery.index(">ground truth<") < gallery.index(">litemind<")
    found = find_gallery_runs(load_leaderboards(boards), runs)
    assert [run.method for run in found[("world-nsd", "retrieval")]] == ["litemind", "ridge"]


def test_report_says_when_no_reconstructions_exist(fixture_dirs, tmp_path):
    boards, _ = fixture_dirs
    page = build_report(boards, tmp_path / "no-runs", tmp_path / "report").read_text()
    assert "No run on these leaderboards saved reconstructions" in page
    assert "<table class='gallery'>" not in page


def _chromium(*args, cwd):
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={cwd / 'chromium-profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=True,
    )


def test_report_renders_in_headless_chromium(fixture_dirs, tmp_path):
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"{CHROMIUM} not found: the HTML report test needs headless Chromium.\n"
            "  fix: apt-get install -y chromium  (CI's .ci/run installs it)"
        )
    boards, runs = fixture_dirs
    index = build_report(boards, runs, tmp_path / "report")
    url = index.resolve().as_uri()
    dom = _chromium("--dump-dom", url, cwd=tmp_path).stdout
    assert dom.count('<table class="board">') == 8 and dom.count('<table class="gallery">') == 1
    assert len(re.findall(r"<img class=\"plot\" src=\"plots/[^\"]+\.png\"", dom)) == 8
    assert len(re.findall(r"<img src=\"gallery/[^\"]+\.png\"", dom)) == 11
    assert "<strong>0.210</strong>" in dom
    shot = tmp_path / "report.png"
    _chromium(f"--screenshot={shot}", "--window-size=1200,2000", url, cwd=tmp_path)
    assert shot.is_file()
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert pixels.shape == (2000, 1200, 3)
    assert (pixels.min(axis=2) < 200).mean() > 0.01  # text and plots, not a blank page
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 80).mean() > 0.002  # the coloured bars of the plots were drawn
    assert pd.Series(pixels.reshape(-1, 3)[:, 0]).nunique() > 50
