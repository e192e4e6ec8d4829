"""Bad input of every kind ends in one ``brainbench: error:`` line naming the file or key, exit code 2.

Two halves: a table of user mistakes and damaged files run through the command line (each case checks the exit
code, one line, the file or key named, no traceback and no partial output), and a fuzz test that truncates and
bit-flips every fixture format at several offsets and accepts only success or a brainbench error.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from leaderboard_records import make_record
from raw_fixtures import fixture_module

from brainbench.cli import main
from brainbench.config import load_run_config
from brainbench.data.manifest import Manifest
from brainbench.data.shards import iter_split, verify_checksums
from brainbench.data.sources.cc2017 import prepare_cc2017
from brainbench.data.sources.god import prepare_god
from brainbench.data.sources.mindeye import prepare_mindeye
from brainbench.data.sources.nsd import prepare_nsd
from brainbench.errors import BrainbenchError
from brainbench.leaderboard.store import append_row, check_leaderboard
from brainbench.methods import config_path
from brainbench.request import BenchRequest

CC2017_VOLUMES = 30
#: dataset -> (fixture writer, raw root below the written folder, extra ``prepare`` options, prepare function)
RAW: dict[str, tuple[Callable[[Path], object], str, list[str], Callable[[Path, Path], object]]] = {
    "god": (
        lambda root: fixture_module("god").write_god_fixture(root),
        "",
        [],
        lambda root, out: prepare_god(root, 1, out, val_fraction=0.2, samples_per_shard=4, progress=False),
    ),
    "nsd": (
        lambda root: fixture_module("nsd").make_fixture(root),
        "",
        [],
        lambda root, out: prepare_nsd(root, 1, out, val_fraction=0.2, samples_per_shard=5, progress=False),
    ),
    "cc2017": (
        lambda root: fixture_module("cc2017").write_wen_mat(
            fixture_module("cc2017").write_cc2017_fixture(
                root, n_train=4, n_test=2, volumes_per_run=CC2017_VOLUMES
            )
        ),
        "",
        ["--volumes-per-run", str(CC2017_VOLUMES)],
        lambda root, out: prepare_cc2017(
            root,
            1,
            out,
            volumes_per_run=CC2017_VOLUMES,
            val_fraction=0.25,
            samples_per_shard=50,
            progress=False,
        ),
    ),
    "mindeye1": (
        lambda root: fixture_module("mindeye").write_me1_fixture(root),
        "",
        ["--version", "1"],
        lambda root, out: prepare_mindeye(root, 1, out, samples_per_shard=5, progress=False),
    ),
    "mindeye2": (
        lambda root: fixture_module("mindeye").write_me2_fixture(root),
        "",
        ["--version", "2"],
        lambda root, out: prepare_mindeye(
            root, 1, out, val_fraction=0.2, samples_per_shard=5, progress=False
        ),
    ),
}


@pytest.fixture(scope="module")
def raw_roots(tmp_path_factory) -> dict[str, Path]:
    """Each dataset's fixture, written once; cases copy it before damaging it."""
    roots = {}
    for name, (write, _, _, _) in RAW.items():
        root = tmp_path_factory.mktemp(name) / "root"
        write(root)
        roots[name] = root
    return roots


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def flip(path: Path, fraction: float) -> None:
    data = bytearray(path.read_bytes())
    data[min(int(len(data) * fraction), len(data) - 1)] ^= 0xFF
    path.write_bytes(bytes(data))


def garbage(path: Path) -> None:
    path.write_bytes(b"\xff\xfe\x00\x9c not this format \x00" * 4)


def nan_betas(path: Path) -> None:
    with h5py.File(path, "r+") as file:
        name = next(iter(file))
        row = file[name][0]
        row[..., 0] = np.nan
        file[name][0] = row


def first(root: Path, pattern: str) -> Path:
    return sorted(root.rglob(pattern))[0]


#: (case id, dataset, file pattern under the raw root, damage)
RAW_CASES = [
    ("god-hdf5-truncated", "god", "Subject1.h5", truncate),
    ("god-tsv-not-text", "god", "stimulus_ImageNetTraining.tsv", garbage),
    ("god-xlsx-truncated", "god", "ImageNetTest_synset.xlsx", truncate),
    ("god-png-truncated", "god", "*.png", truncate),
    ("nsd-roi-nifti-truncated", "nsd", "subj01/func1pt8mm/roi/nsdgeneral.nii.gz", truncate),
    ("nsd-betas-nifti-truncated", "nsd", "subj01/**/betas_session01.nii.gz", lambda p: truncate(p, 0.9)),
    ("nsd-expdesign-mat-truncated", "nsd", "nsd_expdesign.mat", truncate),
    ("nsd-coco-json-truncated", "nsd", "captions_train2017.json", truncate),
    ("nsd-stim-info-csv-empty", "nsd", "nsd_stim_info_merged.csv", lambda p: p.write_bytes(b"")),
    ("nsd-responses-tsv-not-text", "nsd", "subj01/behav/responses.tsv", garbage),
    ("nsd-stimuli-hdf5-truncated", "nsd", "nsd_stimuli.hdf5", truncate),
    ("cc2017-cifti-truncated", "cc2017", "seg1_1_Atlas.dtseries.nii", truncate),
    ("cc2017-mp4-truncated", "cc2017", "seg1.mp4", lambda p: truncate(p, 0.3)),
    ("cc2017-captions-not-text", "cc2017", "captions.tsv", garbage),
    ("mindeye1-tar-truncated", "mindeye1", "train_subj01_0.tar", lambda p: truncate(p, 0.7)),
    ("mindeye2-betas-hdf5-truncated", "mindeye2", "betas_all_subj01_fp32_renorm.hdf5", truncate),
    ("mindeye2-betas-nan", "mindeye2", "betas_all_subj01_fp32_renorm.hdf5", nan_betas),
    ("mindeye2-images-hdf5-truncated", "mindeye2", "coco_images_224_float16.hdf5", truncate),
]


def assert_one_line_error(capsys, code: int, named: str) -> str:
    """Exit 2 and one error line (after any progress bars) naming the file or key; no traceback."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("brainbench: error: ") == 1, err
    line = err.replace("\r", "\n").strip().splitlines()[-1]
    assert line.startswith("brainbench: error: "), err
    assert named in line, line
    return line


@pytest.mark.parametrize(
    ("dataset", "pattern", "damage"), [c[1:] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES]
)
def test_damaged_raw_file(capsys, raw_roots, tmp_path, dataset, pattern, damage):
    root = tmp_path / "root"
    shutil.copytree(raw_roots[dataset], root)
    bad = first(root, pattern)
    damage(bad)
    out = tmp_path / "prepared" / "subj01"
    adapter = "mindeye" if dataset.startswith("mindeye") else dataset
    extra = RAW[dataset][2]
    code = main(["prepare", adapter, "--root", str(root), "--subject", "1", "--out", str(out), *extra])
    assert_one_line_error(capsys, code, bad.name)
    assert not out.exists() and not list(out.parent.glob(".*partial*")), "partial output left behind"


def _config(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "my-ridge.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


RIDGE = "model:\n  class_path: brainbench.methods.ridge.RidgeDecoder\n  init_args:\n    alphas: [1.0]\n"
#: (case id, bench arguments made from tmp_path, the file or key the message must name)
BENCH_CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    (
        "trainer-section-typo",
        lambda t: ["--config", str(_config(t, RIDGE + "trainr:\n  max_epochs: 1\n"))],
        "trainr",
    ),
    ("model-key-typo", lambda t: ["--config", str(_config(t, RIDGE + "    alpha: 2.0\n"))], "alpha"),
    ("yaml-syntax", lambda t: ["--config", str(_config(t, "model: [unclosed\n"))], "my-ridge.yaml"),
    ("yaml-empty", lambda t: ["--config", str(_config(t, ""))], "my-ridge.yaml"),
    ("yaml-not-utf8", lambda t: ["--config", str(_config(t, b"model: \xff\xfe\n"))], "my-ridge.yaml"),
    ("unknown-dataset", lambda t: ["--dataset", "foo"], "'foo'"),
    ("no-config-for-dataset", lambda t: ["--dataset", "god", "--data-root", str(t)], "'god'"),
    ("unknown-override", lambda t: ["--trainer.max_epoch=3"], "max_epoch"),
    ("missing-config-file", lambda t: ["--config", str(t / "absent.yaml")], "absent.yaml"),
]


@pytest.mark.parametrize(
    ("make_args", "named"), [c[1:] for c in BENCH_CASES], ids=[c[0] for c in BENCH_CASES]
)
def test_bench_mistake(capsys, tmp_path, make_args, named):
    args = make_args(tmp_path)
    code = main(["bench", "--method", "ridge", "--home", str(tmp_path / "home"), "--quiet", *args])
    assert_one_line_error(capsys, code, named)
    assert not (tmp_path / "home" / "prepared").exists(), "a mistake in the request must fail before any work"


def _run_folder(tmp_path: Path, result_text: str | None = None) -> tuple[Path, Path]:
    csv_path = tmp_path / "leaderboards" / "world-nsd" / "retrieval.csv"
    metric = "retrieval_b2i_top1_full/world-clip-v1.clip_tokens@v1"
    append_row(csv_path, make_record("run-a").to_row({metric: 0.25}))
    run_dir = tmp_path / "runs" / "run-b"
    run_dir.mkdir(parents=True)
    row = make_record("run-b").to_row({metric: 0.5})
    text = result_text if result_text is not None else json.dumps({"row": row, "leaderboard": str(csv_path)})
    (run_dir / "result.json").write_text(text)
    return run_dir, csv_path


def test_leaderboard_append_of_a_damaged_result(capsys, tmp_path):
    run_dir, _ = _run_folder(tmp_path, result_text='{"row": {"run_id": ')
    assert_one_line_error(capsys, main(["leaderboard", "append", str(run_dir)]), "result.json")


def test_leaderboard_append_to_a_damaged_csv(capsys, tmp_path):
    run_dir, csv_path = _run_folder(tmp_path)
    with csv_path.open("a") as handle:
        handle.write(",".join(["x"] * 80) + "\n")
    err = assert_one_line_error(capsys, main(["leaderboard", "append", str(run_dir)]), "retrieval.csv")
    assert "line 3" in err and "brainbench leaderboard append" in err


def test_the_table_covers_twenty_classes_of_bad_input():
    assert len(RAW_CASES) + len(BENCH_CASES) + 2 >= 20


# --- fuzz: damage each fixture file at several offsets; only success or a brainbench error is accepted ------

DAMAGES = [
    ("truncate", 0.0),
    ("truncate", 0.5),
    ("truncate", 0.9),
    ("flip", 0.1),
    ("flip", 0.5),
    ("flip", 0.97),
]


def _damage(path: Path, kind: str, fraction: float) -> None:
    (truncate if kind == "truncate" else flip)(path, fraction)


def _one_file_per_format(root: Path) -> list[Path]:
    """The first file of each suffix (``.nii.gz`` counts as one), so every format of the fixture is hit."""
    chosen: dict[str, Path] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        chosen.setdefault("".join(path.suffixes[-2:]) if path.name.endswith(".gz") else path.suffix, path)
    return list(chosen.values())


def _accepts_only_brainbench_errors(what: str, bad: Path, run: Callable[..., object], *args: object) -> None:
    try:
        run(*args)
    except BrainbenchError as error:
        assert bad.name in str(error) or bad.parent.name in str(error), f"{what}: {error}"
    except Exception as error:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{what}: raw {type(error).__name__}: {error}")


@pytest.mark.parametrize("dataset", list(RAW))
def test_fuzz_raw_formats(raw_roots, tmp_path, dataset):
    prepare = RAW[dataset][3]
    source = raw_roots[dataset]
    for original in _one_file_per_format(source):
        for kind, fraction in DAMAGES:
            work = tmp_path / f"{kind}-{fraction}"
            shutil.copytree(source, work / "root")
            bad = work / "root" / original.relative_to(source)
            _damage(bad, kind, fraction)
            what = f"{dataset}: {bad.relative_to(work / 'root')} {kind} at {fraction}"
            _accepts_only_brainbench_errors(what, bad, prepare, work / "root", work / "out")
            shutil.rmtree(work)


@pytest.fixture(scope="module")
def prepared_folder(raw_roots, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "subj01"
    RAW["nsd"][3](raw_roots["nsd"], out)
    return out


def _read_prepared(folder: Path) -> None:
    manifest = Manifest.load(folder)
    verify_checksums(folder, manifest)
    for split in manifest.splits:
        list(iter_split(folder, manifest, split))


def test_fuzz_prepared_formats(prepared_folder, tmp_path):
    """Manifest JSON, tar shards and the stimulus store, as ``bench`` reads a prepared folder."""
    for original in _one_file_per_format(prepared_folder):
        for kind, fraction in DAMAGES:
            work = tmp_path / f"{kind}-{fraction}"
            shutil.copytree(prepared_folder, work)
            bad = work / original.relative_to(prepared_folder)
            _damage(bad, kind, fraction)
            what = f"prepared {bad.name} {kind} at {fraction}"
            _accepts_only_brainbench_errors(what, bad, _read_prepared, work)
            shutil.rmtree(work)


def test_fuzz_leaderboard_csv_and_config_yaml(tmp_path):
    _, csv_path = _run_folder(tmp_path)
    yaml_source = config_path("ridge", "world")
    good_csv = csv_path.read_bytes()
    for kind, fraction in DAMAGES:
        csv_path.write_bytes(good_csv)
        _damage(csv_path, kind, fraction)
        _accepts_only_brainbench_errors(f"csv {kind} {fraction}", csv_path, check_leaderboard, csv_path)
        bad_yaml = tmp_path / f"config-{kind}-{fraction}.yaml"
        bad_yaml.write_bytes(yaml_source.read_bytes())
        _damage(bad_yaml, kind, fraction)
        request = BenchRequest(method="ridge", subject=1, config=str(bad_yaml), home=tmp_path / "home")
        _accepts_only_brainbench_errors(f"yaml {kind} {fraction}", bad_yaml, load_run_config, request)
