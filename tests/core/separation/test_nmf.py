import os
import warnings

import numpy as np
import pytest

from stemdeck.core.errors import ParameterError
from stemdeck.core.separation.nmf import beta_divergence, flush_below, nmf, solve_activations


@pytest.fixture
def V(rng: np.random.Generator) -> np.ndarray:
    # A low-rank non-negative matrix plus noise, like a magnitude spectrogram.
    W = rng.gamma(0.5, size=(129, 5))
    H = rng.gamma(0.5, size=(5, 300))
    return (W @ H + 0.01 * rng.random((129, 300))).astype(np.float32)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
def test_divergence_never_increases(V: np.ndarray, beta: float) -> None:
    result = nmf(V, 6, beta=beta, n_iter=40, tol=0, check_every=1)
    values = np.array([d for _, d in result.divergence])
    assert len(values) == 41
    # float32 arithmetic: allow rounding at the 1e-6 relative level, nothing more
    assert np.all(np.diff(values) <= 1e-6 * np.abs(values[:-1])), np.diff(values).max()
    assert values[-1] < 0.9 * values[0]


def test_factors_non_negative_and_shaped(V: np.ndarray) -> None:
    result = nmf(V, 7, n_iter=20)
    assert result.W.shape == (129, 7) and result.H.shape == (7, 300)
    assert result.W.dtype == np.float32 and result.H.dtype == np.float32
    assert (result.W >= 0).all() and (result.H >= 0).all()
    assert np.isfinite(result.W).all() and np.isfinite(result.H).all()


def test_same_seed_same_output_other_seed_differs(V: np.ndarray) -> None:
    a = nmf(V, 5, n_iter=15, seed=3)
    b = nmf(V, 5, n_iter=15, seed=3)
    c = nmf(V, 5, n_iter=15, seed=4)
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a.H, b.H)
    assert not np.array_equal(a.W, c.W)


@pytest.mark.slow
def test_tolerance_stops_early(V: np.ndarray) -> None:
    result = nmf(V, 5, n_iter=2000, tol=1e-3, check_every=5)
    assert 5 <= result.n_iter < 2000


def test_final_divergence_matches_beta_divergence(V: np.ndarray) -> None:
    result = nmf(V, 5, n_iter=10, beta=1.0)
    assert result.divergence[-1][1] == pytest.approx(
        beta_divergence(V, result.W, result.H, beta=1.0), rel=1e-9
    )


def test_matches_scikit_learn_multiplicative_updates(V: np.ndarray) -> None:
    sklearn = pytest.importorskip("sklearn.decomposition")
    rng = np.random.default_rng(0)
    W0 = rng.uniform(0.5, 1.5, (129, 4)).astype(np.float32)
    # scikit-learn's W update on the transposed problem is our H update:
    # V.T = H.T @ W.T, with W.T held fixed. With update_H=False it starts W
    # (our H) at the constant sqrt(mean(V) / K), so we start there too.
    H0 = np.full((4, 300), np.sqrt(V.mean() / 4), dtype=np.float32)
    ours = solve_activations(V, W0, n_iter=25, H_init=H0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "did not converge": we asked for 25 iterations
        HT, _, _ = sklearn.non_negative_factorization(
            V.T,
            H=W0.T.copy(),
            n_components=4,
            init="custom",
            update_H=False,
            solver="mu",
            beta_loss="kullback-leibler",
            max_iter=25,
            tol=0,
        )
    np.testing.assert_allclose(ours, HT.T, rtol=1e-3, atol=1e-5)


@pytest.mark.slow  # about a second: the fast tier stays under a minute
def test_solve_activations_fits_fixed_templates(V: np.ndarray) -> None:
    learned = nmf(V, 5, n_iter=60, tol=0)
    block = V[:, 100:164]
    H = solve_activations(block, learned.W, n_iter=60)
    assert H.shape == (5, 64) and (H >= 0).all()
    start = solve_activations(block, learned.W, n_iter=0)
    assert beta_divergence(block, learned.W, H) < 0.5 * beta_divergence(block, learned.W, start)
    # close to what the joint factorization found for those frames
    joint = beta_divergence(block, learned.W, learned.H[:, 100:164])
    assert beta_divergence(block, learned.W, H) <= joint * 1.05


def test_silence_gives_zero_model() -> None:
    result = nmf(np.zeros((65, 40), np.float32), 3, n_iter=20)
    assert np.isfinite(result.W).all() and np.isfinite(result.H).all()
    assert float((result.W @ result.H).max()) < 1e-6


@pytest.mark.parametrize(
    "bad",
    [np.full((4, 4), -1.0), np.full((4, 4), np.nan), np.zeros((0, 4)), np.zeros(5)],
)
def test_bad_input_raises(bad: np.ndarray) -> None:
    with pytest.raises(ParameterError):
        nmf(bad, 2)


def test_bad_options_raise(V: np.ndarray) -> None:
    with pytest.raises(ParameterError, match="n_components"):
        nmf(V, 0)
    with pytest.raises(ParameterError, match="beta"):
        nmf(V, 2, beta=float("nan"))
    with pytest.raises(ParameterError, match="W_init"):
        nmf(V, 2, W_init=np.ones((3, 3)))


def test_same_bits_on_any_number_of_threads() -> None:
    """`stemdeck separate`, the daemon's worker and a single-threaded prep worker give
    the same separation: partial sums do not depend on the thread count."""
    rng = np.random.default_rng(3)
    V = np.asfortranarray(rng.random((65, 1000), dtype=np.float32))  # 7 blocks of frames
    results = []
    for threads in (1, 2, 3):
        out = nmf(V, 4, n_iter=20, tol=0.0, seed=0, threads=threads)
        results.append((out.W, out.H, solve_activations(V, out.W, n_iter=5, threads=threads)))
    for W, H, H2 in results[1:]:
        assert np.array_equal(W, results[0][0]) and np.array_equal(H, results[0][1])
        assert np.array_equal(H2, results[0][2])


def test_each_call_runs_on_the_threads_it_asks_for() -> None:
    """The thread count is an argument, not a setting fixed by the first call."""
    import threading

    rng = np.random.default_rng(4)
    V = np.asfortranarray(rng.random((65, 1000), dtype=np.float32))  # 4 ranges of frames
    for threads in (3, 1, 2):
        seen: list[int] = []

        def count(fraction: float, seen: list[int] = seen) -> None:
            seen.append(sum(t.name.startswith("stemdeck-nmf") for t in threading.enumerate()))

        nmf(V, 4, n_iter=3, tol=0.0, progress=count, threads=threads)
        # A pool starts its threads as work waits, so fewer may do; never more. The
        # last report comes after the call's pool is shut down.
        if threads == 1:
            assert seen == [0, 0, 0, 0]
        else:
            assert 0 < max(seen) <= threads and seen[-1] == 0, (threads, seen)
    with pytest.raises(ParameterError, match="threads"):
        nmf(V, 4, n_iter=1, threads=0)


def _nmf_in_child(V: np.ndarray, expected: np.ndarray) -> None:
    import os

    os._exit(0 if np.array_equal(nmf(V, 4, n_iter=5, tol=0).W, expected) else 3)


@pytest.mark.e2e
@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_runs_nmf_on_its_own_threads(rng: np.random.Generator) -> None:
    """`stemdeck prep` forks its workers from a client that may have run NMF: a
    child that inherited a thread pool but not its threads used to wait forever
    for blocks nobody ran."""
    import multiprocessing

    from stemdeck.core.separation import nmf as nmf_module

    V = rng.gamma(0.5, size=(64, 4 * nmf_module._BLOCK * 4)).astype(np.float32)
    assert len(nmf_module._split(V.shape[1])) > 1  # the pool is used
    expected = nmf(V, 4, n_iter=5, tol=0).W  # the parent has run NMF on its threads
    child = multiprocessing.get_context("fork").Process(target=_nmf_in_child, args=(V, expected))
    child.start()
    child.join(timeout=120)
    if child.exitcode is None:
        child.kill()
        child.join()
    assert child.exitcode == 0  # None: hung; 3: another result


def test_flush_below_sets_what_a_masked_assignment_sets() -> None:
    """Values below the floor become +0.0, the rest stay bit for bit: a masked
    assignment's result, subnormals and the floor itself included."""
    rng = np.random.default_rng(5)
    a = (rng.random((300, 257), dtype=np.float32) ** 12) * np.float32(1e-25)
    a[0, :4] = [0.0, 1e-15, np.nextafter(np.float32(1e-15), 0), 1e-45]
    a[1] = rng.random(257, dtype=np.float32)
    want = a.copy()
    want[want < np.float32(1e-15)] = 0.0
    view = a[:, 3:200]  # a strided view, as a block of a larger array is
    before = a.copy()
    flush_below(view, np.float32(1e-15))
    np.testing.assert_array_equal(a[:, 3:200], want[:, 3:200])
    assert not np.signbit(a).any()
    np.testing.assert_array_equal(a[:, :3], before[:, :3])
    np.testing.assert_array_equal(a[:, 200:], before[:, 200:])
    assert 0 < np.count_nonzero(a[:, 3:200] == 0) < a[:, 3:200].size


@pytest.mark.parametrize("bins", [256, 400])
def test_the_block_length_changes_no_frame(
    monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator, bins: int
) -> None:
    """Fewer bins, longer blocks (the stems model's 256 bands: 512 frames): every
    frame is still updated once per iteration, whatever the blocks and the ranges,
    and the divergence and a full fit read every frame."""
    from stemdeck.core.separation import nmf as nmf_module

    W = rng.random((bins, 12), dtype=np.float32)
    V = (W @ rng.random((12, 1500), dtype=np.float32)).astype(np.float32)
    runs = []
    for budget in (1, nmf_module._BLOCK_BYTES):  # 128-frame blocks, then the long ones
        monkeypatch.setattr(nmf_module, "_BLOCK_BYTES", budget)
        H = solve_activations(V, W, n_iter=5, threads=1)
        fit = nmf(V, 12, n_iter=5, seed=3, threads=2)
        runs.append((H, beta_divergence(V, W, H), fit.W, fit.H))
    assert nmf_module._step(256) == 512 and nmf_module._step(2049) == 128
    (H1, d1, W1, F1), (H2, d2, W2, F2) = runs
    np.testing.assert_allclose(H2, H1, rtol=2e-5, atol=1e-7 * H1.max())
    assert d2 == pytest.approx(d1, rel=1e-5)
    np.testing.assert_allclose(W2, W1, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(F2, F1, rtol=2e-4, atol=1e-6 * F1.max())
