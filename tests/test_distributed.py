"""Data-parallel training (pydl.distributed): jobs of 2 and 3 processes started with mpiexec run
tests/distributed_worker.py; single-process behaviour is tested in this process."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import pydl
from pydl import distributed as dist

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")


def _mpiexec():
    pytest.importorskip("mpi4py", reason="pip install 'pydl-nn[mpi]' for the multi-process tests")
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    exe = here if os.path.exists(here) else shutil.which("mpiexec")
    if exe is None:
        pytest.skip("mpi4py is installed but no mpiexec was found (pip install mpich)")
    return exe


def _launch(cmd, env, timeout_s, cwd=None):
    """Run an mpiexec command line; a job still running after timeout_s is killed with every
    process it started, and the test fails showing what the job printed so far."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
    if timed_out:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # mpiexec and the ranks it started
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        pytest.fail(f"the job {' '.join(map(str, cmd[3:]))} still ran after {timeout_s} s and was killed; "
                    f"its output:\n--- stdout ---\n{out[-4000:]}\n--- stderr ---\n{err[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), time.monotonic() - t0


def _run(n, scenario, outdir, timeout_s=90, worker_timeout=60, env_extra=None):
    env = dict(os.environ, WORKER_TIMEOUT=str(worker_timeout), OMP_NUM_THREADS="1", **(env_extra or {}))
    return _launch([_mpiexec(), "-n", str(n), sys.executable, WORKER, scenario, str(outdir)], env, timeout_s)


@pytest.mark.parametrize("n", [2, 3])
def test_n_ranks_match_one_process_on_the_global_batch(n, tmp_path):
    proc, _ = _run(n, "equivalence", tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(n)]
    res = results[0]
    assert res["ranks"] == n
    cases = [k for k in res if "/" in k]
    assert len(cases) == 10
    for k in cases:
        c = res[k]
        # same weights as one process on the same global batches (float32 summation order)
        assert c["max_weight_diff"] < 2e-6, (k, c)
        assert c["loss_diff"] < 1e-5 and c["eval_diff"] < 1e-4, (k, c)
        assert c["same_on_ranks"], k  # bitwise identical weights on every rank
        assert c["steps"] == c["iterations"] > 0
    # the tiny case (7 samples, batch 2) gives some rank an empty piece of the last batch
    assert res["mlp_tiny_batches/sgd"]["steps"] == 12
    assert res["auc"]["eval_diff"] < 1e-6 and res["auc"]["fit_diff"] < 1e-5, res["auc"]
    assert 0.55 < res["auc"]["auc"] < 1.0  # a real, non-trivial AUC
    assert res["shuffle_same_on_ranks"]
    assert res["broadcast"] == {"before": False, "after": True}
    assert res["source_diff"] < 2e-6
    # the logs are reduced, so every rank stopped at the same epoch with the same values
    assert len({r["early_stopping_epochs"] for r in results}) == 1
    assert len({r["val_loss"] for r in results}) == 1
    assert results[0]["early_stopping_epochs"] == 2
    # only rank 0 wrote the checkpoint and the CSV log
    assert (tmp_path / "ckpt0.npz").exists() and (tmp_path / "log0.csv").exists()
    for r in range(1, n):
        assert not (tmp_path / f"ckpt{r}.npz").exists() and not (tmp_path / f"log{r}.csv").exists()


# MPICH over TCP (UCX or libfabric): there MPI_Abort on a communicator other than MPI_COMM_WORLD
# blocks until the rank it aborts enters MPI, which a rank that never joins does not
_TRANSPORTS = {"default": {},
               "mpich-ucx-tcp": {"MPIR_CVAR_CH4_NETMOD": "ucx", "UCX_TLS": "tcp,self"},
               "mpich-ofi-tcp": {"MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp"}}


@pytest.mark.parametrize("transport", list(_TRANSPORTS))
@pytest.mark.parametrize("n", [2, 3])
def test_a_rank_raising_stops_every_rank_with_an_error(n, transport, tmp_path):
    proc, elapsed = _run(n, "raise", tmp_path, worker_timeout=60, env_extra=_TRANSPORTS[transport])
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Boom: simulated failure on rank 1" in out
    for r in range(n):
        if r != 1:
            assert f"rank 1 failed: Boom: simulated failure on rank 1; stopping rank {r} as well" in out, out[-3000:]
    assert elapsed < 60  # well inside the timeout: the failure notice, not the timeout, ended it


@pytest.mark.parametrize("transport", list(_TRANSPORTS))
def test_a_rank_that_never_joins_times_out(transport, tmp_path):
    proc, elapsed = _run(2, "hang", tmp_path, worker_timeout=3, env_extra=_TRANSPORTS[transport])
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "rank 0 waited 3 s for the gradient allreduce of step 1" in out, out[-3000:]
    assert elapsed < 25, out[-3000:]  # the sleeping rank would take 30 s: the abort ended it


@pytest.mark.parametrize("transport", list(_TRANSPORTS))
def test_a_rank_exiting_normally_after_a_timeout_aborts_the_job(transport, tmp_path):
    """The timed-out rank catches the error and returns: it must not wait in MPI_Finalize for
    the rank that never joined."""
    proc, elapsed = _run(2, "hang_caught", tmp_path, worker_timeout=3, env_extra=_TRANSPORTS[transport])
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "rank 0 caught: [pydl.distributed] rank 0 waited 3 s" in proc.stdout, out[-3000:]
    assert "rank 0 is exiting after a failed collective: aborting the MPI job" in out, out[-3000:]
    assert elapsed < 25, out[-3000:]


def test_different_models_on_ranks_are_an_error_on_every_rank(tmp_path):
    proc, _ = _run(2, "mismatch", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for r in range(2):
        assert f"rank {r} caught: [DistributedOptimizer] the model differs between ranks: entry 1 is " \
               f"'Dense param W (12, 8) float32 trainable=True' on rank 0 but 'Dense param W (12, 9)" in proc.stdout


# -- one process -------------------------------------------------------------------------------
def test_single_process_is_a_no_op_and_fit_matches_the_plain_optimizer():
    dist.init()
    assert dist.size() >= 1 and dist.is_initialized()
    if dist.size() != 1:
        pytest.skip("running inside an MPI job")
    assert dist.rank() == 0 and dist.is_root()
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(dist.allreduce(a), a)
    np.testing.assert_array_equal(dist.allreduce(a, op="mean"), a)
    assert dist.broadcast(a) is a
    dist.barrier()
    g = np.random.default_rng(0)
    x = g.standard_normal((50, 5)).astype(np.float32)
    y = g.integers(0, 3, 50)

    def make(opt):
        pydl.seed(3)
        m = pydl.Sequential([pydl.layers.Dense(7, activation="relu", input_shape=(5,),
                                               kernel_regularizer=pydl.regularizers.l2(1e-2)),
                             pydl.layers.Dense(3, activation="softmax")])
        m.compile(loss="sparse_categorical_crossentropy", optimizer=opt, metrics=["accuracy"])
        return m
    ref = make(pydl.optimizers.Adam(1e-2))
    hr = ref.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    m = make(dist.DistributedOptimizer(pydl.optimizers.Adam(1e-2)))
    h = m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for p, q in zip(ref.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(q, p)  # one rank takes the plain step
    np.testing.assert_array_equal(h.history["loss"], hr.history["loss"])
    assert isinstance(m.optimizer, pydl.optimizers.Adam)  # the model keeps (and saves) the wrapped one
    assert m._dist.stats["steps"] == 14


def test_saved_model_of_a_distributed_fit_loads_in_one_process(tmp_path):
    pydl.seed(0)
    m = pydl.Sequential([pydl.layers.Dense(2, input_shape=(3,))])
    m.compile(loss="mse", optimizer=dist.DistributedOptimizer(pydl.optimizers.SGD(0.1, momentum=0.5)))
    x = np.ones((4, 3), np.float32)
    m.fit(x, np.zeros((4, 2), np.float32), epochs=2, verbose=0)
    m.save(tmp_path / "m.npz")
    back = pydl.load_model(tmp_path / "m.npz")
    assert type(back.optimizer).__name__ == "SGD" and back.optimizer.iterations == 2
    np.testing.assert_array_equal(back.predict(x), m.predict(x))


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="fusion_threshold_mb must be a positive number"):
        dist.DistributedOptimizer("adam", fusion_threshold_mb=0)
    with pytest.raises(ValueError, match="already a DistributedOptimizer"):
        dist.DistributedOptimizer(dist.DistributedOptimizer("adam"))
    with pytest.raises(ValueError, match="timeout must be > 0"):
        dist.init(timeout=-1)
    with pytest.raises(ValueError, match="op must be 'sum' or 'mean'"):
        dist.allreduce(np.ones(2), op="max")
    with pytest.raises(ValueError, match="numeric array"):
        dist.allreduce(np.array(["a"]))
    with pytest.raises(ValueError, match="C-contiguous, writeable"):
        dist.broadcast(np.ones((4, 4))[:, ::2])
    with pytest.raises(ValueError, match="root must be a rank"):
        dist.broadcast(np.ones(2), root=5)
    dist.init(timeout=300)


def test_shard_bounds_follow_array_split():
    for n in (0, 1, 5, 7, 32):
        for s in (1, 2, 3, 4):
            pieces = np.array_split(np.arange(n), s)
            for r in range(s):
                lo, hi = dist.shard_bounds(n, r, s)
                np.testing.assert_array_equal(np.arange(lo, hi), pieces[r])


def test_import_does_not_load_mpi4py():
    code = "import sys, pydl; assert 'mpi4py' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_started_by_a_launcher_without_mpi4py_says_what_to_install():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "import pydl\n"
            "try:\n    pydl.distributed.init()\nexcept ImportError as e:\n    print('ERR', e)\n")
    env = dict(os.environ, PMI_SIZE="2", PMI_RANK="0")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert "ERR [pydl.distributed.init] this process was started by an MPI launcher but mpi4py is not installed: " \
           "pip install \"pydl-nn[mpi]\"" in out.stdout, out.stdout + out.stderr


def test_distributed_digits_example_learns(tmp_path):
    script = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "distributed_digits.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc, _ = _launch([_mpiexec(), "-n", "2", sys.executable, script, "--epochs", "6", "--out", str(tmp_path)],
                      env, 120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    line = [ln for ln in proc.stdout.splitlines() if "test accuracy" in ln]
    assert len(line) == 1  # printed by rank 0 only
    acc = float(line[0].split("test accuracy ")[1].split()[0])
    assert acc >= 0.9, line[0]
    assert "weights identical on every rank" in line[0] and (tmp_path / "model.npz").exists()
