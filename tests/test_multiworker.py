"""Every method on 2 MultiWorkerMirroredStrategy worker processes equals the same run in one process.

One pair of workers (and one plain process) runs every method in turn (see
`tests/multiworker.py`); the tests compare what they saved. Masks and
counters must be identical on both workers and equal to the single
process's; float variables identical on both workers and within 1e-5
(relative) of the single process's. A pair whose worker is killed and
which is then restarted resumes from its checkpoint to the same model.
"""

import multiworker  # tests/multiworker.py: pytest puts this directory on sys.path
import numpy as np
import pytest

RTOL = 1e-5

# One pair of worker processes serves every test of this file: keep them on one xdist worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("multiworker")]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return multiworker.run(list(multiworker.METHODS), tmp_path_factory.mktemp("multiworker"))


def _is_exact(path, value):
    """Masks, counters and flags must match bit for bit; trained floats within RTOL."""
    return "mask" in path or value.dtype.kind in "biu"


def _assert_matches(got, expected, label):
    """Exact variables equal, float ones within RTOL (relative to the largest entry)."""
    assert set(got) == set(expected), label
    for path, want in expected.items():
        if _is_exact(path, want):
            assert np.array_equal(got[path], want), f"{label}: {path} differs from the single process"
        else:
            error = np.max(np.abs(got[path] - want)) / max(np.max(np.abs(want)), 1e-30)
            assert error <= RTOL, f"{label}: {path} is {error:.2e} (relative) from the single process"


@pytest.mark.parametrize("method", list(multiworker.METHODS))
def test_workers_agree_and_match_one_process(results, method):
    first, second = results["worker0"][method], results["worker1"][method]
    assert set(first) == set(second)
    for path in first:
        assert np.array_equal(first[path], second[path]), f"{method}: {path} differs between the workers"
    _assert_matches(first, results["single"][method], method)


@pytest.mark.parametrize("method", ["magnitude", "magnitude_global"])
def test_magnitude_pruned_on_schedule(results, method):
    variables = results["worker0"][method]
    steps = [v for path, v in variables.items() if path.endswith("pruning_step")]
    assert steps and all(int(step) == 8 for step in steps)  # 2 epochs of 4 global batches
    masks = [v for path, v in variables.items() if path.endswith("_mask")]
    pruned = sum(int(np.sum(mask == 0)) for mask in masks)
    if method == "magnitude":
        assert all(np.sum(mask == 0) == round(0.75 * mask.size) for mask in masks)
    else:
        assert pruned == round(0.75 * sum(mask.size for mask in masks))


@pytest.mark.parametrize("method", ["freezenet", "snip"])
def test_one_shot_masks_keep_the_top_fifth(results, method):
    masks = [v for path, v in results["worker0"][method].items() if path.endswith("_mask")]
    size = sum(mask.size for mask in masks)
    kept = sum(int(np.sum(mask != 0)) for mask in masks)
    assert kept in (round(0.2 * size), int(np.ceil(0.2 * size)))


def test_jackpot_scores_moved_the_masks(results):
    variables = results["worker0"]["jackpot"]
    scores = {path: v for path, v in variables.items() if path.endswith("scores")}
    masks = {path: v for path, v in variables.items() if path.endswith("_mask")}
    assert scores and masks
    assert not all(np.all(np.isin(s, (0.99, 1.0))) for s in scores.values())  # trained away from the init


def test_polarization_fixed_half_of_the_gates(results):
    variables = results["worker0"]["polarize"]
    decisions = [v for path, v in variables.items() if path.endswith("decisions")]
    assert decisions and int(variables["gated_fc/step"]) == 8  # the gates count training steps
    assert sum(int(np.sum(d == 0)) for d in decisions) == sum(d.size for d in decisions) // 2


def test_hessian_traces_are_estimated(results):
    values = [v for path, v in results["worker0"]["hessian"].items() if path.endswith("/value")]
    assert len(values) == 3 and all(np.all(np.isfinite(v)) and np.any(v != 0) for v in values)


def test_a_killed_worker_and_its_peer_resume_from_the_checkpoint(results, tmp_path):
    workers = ("worker0", "worker1")
    multiworker.run(["resume"], tmp_path, roles=workers, crash_at_epoch=2)  # worker 1 exits, worker 0 is killed
    resumed = multiworker.run(["resume"], tmp_path, roles=workers)
    uninterrupted = results["single"]["resume"]
    assert list(uninterrupted["epochs_run"]) == [0, 1, 2]
    for role in workers:
        variables = resumed[role]["resume"]
        assert list(variables["epochs_run"]) == [2]  # resumed after the 2 saved epochs
        _assert_matches({k: v for k, v in variables.items() if k != "epochs_run"},
                        {k: v for k, v in uninterrupted.items() if k != "epochs_run"}, role)
