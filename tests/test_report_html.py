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

from brainbench.leaderboard.headline import MAX_HEADLINE, select_headline
from brainbench.leaderboard.render import load_leaderboards, metric_info
from brainbench.leaderboard.report import TOP_K, build_report, find_gallery_runs
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
    assert (
        page.count("<script>") == 1 and "<style>" in page
    )  # one inline sorter, nothing loaded from elsewhere
    assert not re.search(r"<(script|link|img)[^>]*(src|href)=['\"]?(https?:)?//", page)
    # one headline table per section: world-god, world-nsd, nsd reconstruction and retrieval as reported
    assert page.count("<table class='headline sortable'>") == 4
    # behind the toggles: world-god (1), world-nsd (3), nsd reconstruction as reported (3), retrieval (1)
    assert page.count("<table class='board'>") == 8 and page.count("<details class='all'>") == 4
    assert "<td><strong>0.210</strong></td>" in page and "<td><strong>0.550</strong></td>" in page  # ↑ and ↓
    assert "<code>corrdist</code> ↓" in page and "0.003 (1/300)" in page
    plots = sorted((tmp_path / "report" / "plots").glob("*.png"))
    assert len(plots) == 8 + 4 and all(300 < Image.open(p).size[0] <= 1200 for p in plots)
    assert all(Image.open(p).size[1] <= 600 for p in plots)  # screen-sized, whatever the number of metrics
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


def _require_chromium() -> None:
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"{CHROMIUM} not found: the HTML report test needs headless Chromium.\n"
            "  fix: apt-get install -y chromium  (CI's .ci/run installs it)"
        )


def test_report_renders_in_headless_chromium(fixture_dirs, tmp_path):
    _require_chromium()
    boards, runs = fixture_dirs
    index = build_report(boards, runs, tmp_path / "report")
    url = index.resolve().as_uri()
    dom = _chromium("--dump-dom", url, cwd=tmp_path).stdout
    assert dom.count('<table class="board">') == 8 and dom.count('<table class="gallery">') == 1
    assert len(re.findall(r"<img class=\"plot\" src=\"plots/[^\"]+\.png\"", dom)) == 8 + 4
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


def test_headline_prefers_the_primary_target_and_covers_the_rest():
    tokens, image = "world-clip:v1.clip_tokens", "world-clip:v1.clip_image"
    ids = [
        f"retrieval_b2i_top1_subset300/{tokens}@v1",
        f"retrieval_b2i_top1_subset300/{image}@v1",
        f"retrieval_b2i_top1_subset50/{tokens}@v1",  # a smaller pool: never the headline
        f"retrieval_b2i_top5_subset300/{tokens}@v1",
        f"identification_2way/{tokens}@v1",
        f"identification_2way/{image}@v1",
        "identification_2way/effnet_lite0@v1",
        "pixcorr@v1",
        "fid/world-clip:v1/clip_image@v1",
    ]
    metrics = [metric_info(i) for i in ids]
    # entries 0-2 were trained on clip_tokens, entry 3 on clip_image only
    filled = {i: {0, 1, 2} for i in ids}
    filled |= {ids[1]: {3}, ids[5]: {0, 1, 2, 3}, ids[6]: {3}, ids[7]: {3}}
    columns = select_headline("retrieval", metrics, filled)
    assert [(c.header, c.info.metric_id) for c in columns] == [
        ("b2i top-1, 300", ids[0]),
        ("b2i top-1, 300", ids[1]),  # added for entry 3, which has no clip_tokens column
        ("2-way", ids[4]),
        ("2-way", ids[5]),
        ("PixCorr", ids[7]),
    ]
    assert [c.network_note for c in columns[:2]] == ["clip_tokens", "clip_image"]
    unknown = select_headline("brain-only", [metric_info("brain_corr@v1")], {"brain_corr@v1": {0}})
    assert [c.info.metric_id for c in unknown] == ["brain_corr@v1"]  # no slot matches: shown as it is
    many = [metric_info(f"identification_2way/net{i}@v1") for i in range(12)]
    wide = select_headline("reconstruction", many, {m.metric_id: {0} for m in many})
    assert len(wide) == MAX_HEADLINE


def _many_metric_ids():
    ids = [
        f"retrieval_{d}_top{k}_{variant}300/world-clip:v1.{pred}@v1"
        for d in ("b2i", "i2b")
        for k in (1, 5)
        for variant in ("subset", "perquery")
        for pred in ("clip_tokens", "clip_image")
    ]
    ids += [
        f"retrieval_{d}_top1_full/world-clip:v1.{p}@v1"
        for d in ("b2i", "i2b")
        for p in ("clip_tokens", "clip_image")
    ]
    ids += [f"identification_2way/world-clip:v1.{p}@v1" for p in ("clip_tokens", "clip_image", "clip_text")]
    ids += [f"identification_2way/world-clip:v1/layer:{i}@v1" for i in range(1, 5)]
    ids += ["identification_2way/effnet_lite0@v1", "identification_2way/world-clip:v1/clip_image@v1"]
    ids += ["pixcorr@v1", "ssim@v1", "psnr@v1", "mse@v1", "corrdist/effnet_lite0@v1", "corrdist/swav@v1"]
    ids += ["lpips/alex@v1", "fid/world-clip:v1/clip_image@v1", "kid/world-clip:v1/clip_image@v1"]
    ids += ["brain_corr@v1", "retrieval_b2t_top1_subset300/world-clip:v1.clip_image@v1"]
    return ids


@pytest.fixture
def hundred_rows(tmp_path):
    """One leaderboard with 100 entries (20 methods × 5 subjects) and 40 metric columns."""
    ids = _many_metric_ids()
    rng = np.random.default_rng(0)
    rows = []
    for m in range(20):
        for s in range(5):
            values = {
                i: float(rng.uniform(10, 150) if i.startswith(("psnr", "fid")) else rng.uniform())
                for i in ids
            }
            row = record(f"run-{m}-{s}", f"method{m:02d}", subject=f"subj0{s + 1}").to_row(values)
            row["config"] = "world-long-config" if m % 3 else "world"  # label columns of ablations
            row["generator"] = "world-decoder-image+detail" if m % 4 == 0 else ""
            rows.append(row)
    csv = tmp_path / "leaderboards" / "world-nsd" / "retrieval.csv"
    csv.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(csv, index=False)
    return tmp_path / "leaderboards", ids


MEASURE_JS = """<script>
window.addEventListener('load', function () {
  var body = document.body, root = document.documentElement;
  body.dataset.height = root.scrollHeight;
  body.dataset.pageFits = root.scrollWidth <= root.clientWidth;
  var boxes = Array.prototype.slice.call(document.querySelectorAll('div.headline'));
  body.dataset.headlines = boxes.length;
  body.dataset.headlineFits = boxes.every(function (d) { return d.scrollWidth <= d.clientWidth; });
  body.dataset.openDetails = document.querySelectorAll('details[open]').length;
  var table = document.querySelector('table.headline');
  table.querySelector('thead th[data-dir="1"]').click();
  body.dataset.sortedFirst = table.tBodies[0].rows[0].querySelector('td[data-v]').dataset.v;
});
</script>"""


def test_report_stays_readable_with_100_rows_and_40_metrics(hundred_rows, tmp_path):
    _require_chromium()
    boards, ids = hundred_rows
    index = build_report(boards, tmp_path / "no-runs", tmp_path / "report")
    page = index.read_text()
    headline = page[page.index("<table class='headline sortable'>") : page.index("<details class='all'>")]
    assert headline.count("<th title=") == 6  # b2i, i2b, 2-way, PixCorr, SSIM, per-query: clip_tokens only
    assert headline.count("<tr>") == 1 + 100  # header and every entry
    assert f"the {TOP_K} best of 100 entries" in page
    measured = index.with_name("measured.html")
    measured.write_text(page.replace("</body>", MEASURE_JS + "</body>"))
    dom = _chromium("--window-size=1280,900", "--dump-dom", measured.resolve().as_uri(), cwd=tmp_path).stdout
    data = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', re.search(r"<body[^>]*>", dom)[0]))
    assert data["headlines"] == "1" and data["open-details"] == "0", data
    assert data["headline-fits"] == "true" and data["page-fits"] == "true", data  # no horizontal scroll
    assert int(data["height"]) < 4000, data  # 1,806 px when written (the old layout: 33,010 px)
    frame = pd.read_csv(boards / "world-nsd" / "retrieval.csv")
    # clicking the first headline header (b2i subset300, clip_tokens: ids[0]) sorts the best entry first
    assert float(data["sorted-first"]) == pytest.approx(frame[ids[0]].max())
    details = dom[dom.index('<details class="all">') :]
    assert all(f'title="{metric_id}"' in details for metric_id in ids)  # every metric, behind the toggle
