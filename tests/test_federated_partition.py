"""Sites, trial splits and the missing-modality generator."""

import numpy as np
import pytest

from brainbench.errors import ConfigError
from brainbench.federated.config import FederatedConfig, load_federated_config
from brainbench.federated.partition import assign_sites, missing_masks, split_trials


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 0.7])
def test_missing_rates_are_p_independently_per_modality(p):
    n = 200_000
    has_image, has_text = missing_masks(n, p, seed=3)
    tol = 4 * np.sqrt(p * (1 - p) / n) + 1e-12
    assert abs((~has_image).mean() - p) <= tol
    assert abs((~has_text).mean() - p) <= tol
    # independent: both missing with probability p^2, complete with (1 - p)^2
    assert abs((~has_image & ~has_text).mean() - p * p) <= tol
    assert abs((has_image & has_text).mean() - (1 - p) ** 2) <= tol


def test_missing_masks_are_seeded():
    a, b = missing_masks(1000, 0.5, seed=1), missing_masks(1000, 0.5, seed=1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], missing_masks(1000, 0.5, seed=2)[0])
    with pytest.raises(ConfigError):
        missing_masks(10, 1.0, seed=0)


def test_eight_sites_over_four_subjects_split_each_subject_in_two():
    sites = assign_sites([1, 2, 5, 7], 8)
    assert [[(p.subject, p.share, p.n_shares) for p in s] for s in sites] == [
        [(1, 0, 2)],
        [(2, 0, 2)],
        [(5, 0, 2)],
        [(7, 0, 2)],
        [(1, 1, 2)],
        [(2, 1, 2)],
        [(5, 1, 2)],
        [(7, 1, 2)],
    ]
    assert [[p.subject for p in s] for s in assign_sites([1, 2, 5, 7], 1)] == [[1, 2, 5, 7]]


@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_split_trials_is_a_partition(alpha):
    labels = np.random.default_rng(0).integers(0, 10, size=1000)
    parts = split_trials(labels, 3, alpha, seed=0)
    joined = np.sort(np.concatenate(parts))
    assert np.array_equal(joined, np.arange(1000))


def test_dirichlet_split_skews_labels_and_uniform_does_not():
    labels = np.repeat(np.arange(20), 100)

    def skew(parts):  # mean over classes of the largest share any site has of that class
        return np.mean([max(np.sum(labels[p] == c) for p in parts) / 100 for c in range(20)])

    assert skew(split_trials(labels, 2, 0.0, seed=0)) < 0.6
    assert skew(split_trials(labels, 2, 0.1, seed=0)) > 0.85


def test_config_round_trips_through_flowers_run_config():
    config = FederatedConfig(method="fedavg-zero", sites=3, missing=0.3, subjects="1+2")
    assert FederatedConfig.from_run_config(config.to_run_config()) == config
    with pytest.raises(ConfigError):
        FederatedConfig(method="fedprox")
    assert load_federated_config("world", rounds=3).rounds == 3


def test_a_missing_flower_gives_one_error_naming_the_extra(monkeypatch):
    import sys

    from brainbench.federated.engine import require_flower

    monkeypatch.setitem(sys.modules, "flwr", None)  # `import flwr` now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'brainbench\[federated\]'"):
        require_flower()


def test_brainbench_imports_without_flower():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['flwr'] = None\n"
        "import brainbench.cli, brainbench.federated.run, brainbench.federated.local\n"
        "assert 'flwr.app' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
