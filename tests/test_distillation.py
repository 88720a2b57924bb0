"""Distillation: the loss against a direct computation, teachers, resume, the device."""

from __future__ import annotations

import math

import numpy as np
import pytest

import mnist_xp
from mnist_xp.backend import Backend, get_backend
from mnist_xp.errors import TrainingInterrupted
from mnist_xp.model import Architecture, init_params, loss_and_grads, soft_targets
from mnist_xp.optim import SGD
from mnist_xp.training.checkpoint import data_fingerprint, load_state, save_state
from mnist_xp.training.engines import EngineSetup, EpochInputs, GenericEngine
from mnist_xp.training.teacher import Teacher, resolve_teacher

from helpers_data import blobs
from test_cli import run_cli
from test_deep import deep_problem, numeric_gradients
from test_engines import cuda_standin

CPU = get_backend("cpu")


def direct_distillation_loss(z, y, soft, t, a):
    """Hinton et al.'s loss of one batch, summed, written out one number at a time."""
    total = 0.0
    for row, label, q in zip(z.tolist(), y.tolist(), soft.tolist()):
        top = max(row)
        log_norm = top + math.log(sum(math.exp(v - top) for v in row))
        hard = -(row[label] - log_norm)
        scaled = [v / t for v in row]
        top_t = max(scaled)
        log_norm_t = top_t + math.log(sum(math.exp(v - top_t) for v in scaled))
        kl = sum(qi * (math.log(qi) - (si - log_norm_t)) for qi, si in zip(q, scaled) if qi > 0)
        total += (1 - a) * hard + a * t * t * kl
    return total


@pytest.mark.parametrize("t, a", [(1.0, 1.0), (4.0, 0.5), (2.5, 0.9), (20.0, 0.3)])
def test_the_distillation_loss_is_hintons_written_out(t, a):
    arch, params, x, y = deep_problem(hidden=(5,))
    rng = np.random.default_rng(1)
    soft = soft_targets(rng.normal(size=(7, 3)) * 3, t, np)
    loss, _, _ = loss_and_grads(params, x, y, arch, np, soft=soft, temperature=t,
                                distill_weight=a)
    h = np.maximum(x @ params["W1"] + params["b1"], 0)
    z = h @ params["W2"] + params["b2"]
    assert float(loss) == pytest.approx(direct_distillation_loss(z, y, soft, t, a), rel=1e-10)


def test_a_student_that_matches_its_teacher_has_no_soft_loss():
    arch, params, x, y = deep_problem(hidden=(5,))
    h = np.maximum(x @ params["W1"] + params["b1"], 0)
    soft = soft_targets(h @ params["W2"] + params["b2"], 3.0, np)
    loss, _, grads = loss_and_grads(params, x, y, arch, np, soft=soft, temperature=3.0,
                                    distill_weight=1.0)
    assert abs(float(loss)) < 1e-12
    assert all(np.abs(g).max() < 1e-12 for g in grads.values())


@pytest.mark.parametrize("weights", [False, True])
def test_distillation_gradients_match_finite_differences_on_every_backend(backend, weights):
    arch, params, x, y = deep_problem(hidden=(5, 4))
    rng = np.random.default_rng(2)
    soft = soft_targets(rng.normal(size=(7, 3)) * 2, 3.0, np)
    w = rng.random(7) if weights else None
    xp = backend.xp
    with backend.activate():
        dev = {k: backend.asarray(v) for k, v in params.items()}
        args = (backend.asarray(x), backend.asarray(y), arch, xp, 0.1,
                None if w is None else backend.asarray(w), None, backend.asarray(soft), 3.0, 0.7)
        _, _, grads = loss_and_grads(dev, *args)

        def mean_loss(p):
            total = float(backend.to_numpy(loss_and_grads(p, *args)[0]))
            return total / (w.sum() if w is not None else x.shape[0])

        numeric = numeric_gradients(mean_loss, dev, backend, backend.to_numpy)
    for name in arch.param_names:
        np.testing.assert_allclose(backend.to_numpy(grads[name]), numeric[name], rtol=1e-6,
                                   atol=1e-9, err_msg=name)


def fitted_teacher(x, y, **kw):
    settings = dict(n_hidden=(20, 10), epochs=3, batch_size=16, device="cpu", random_state=1)
    settings.update(kw)
    return mnist_xp.MLPClassifier(**settings).fit(x, y)


def test_an_ensemble_teacher_averages_its_members_soft_targets():
    x, y = blobs(n=120)
    a, b = fitted_teacher(x, y), fitted_teacher(x, y, random_state=2, n_hidden=9)
    teacher = resolve_teacher(mnist_xp.Ensemble([a, b]), classes=np.arange(4), n_features=36,
                              dtype=np.float32, backend=CPU, temperature=2.0, weight=0.5)
    xb = x[:10].astype(np.float32) / 255
    want = sum(soft_targets(np.log(m.predict_proba(x[:10]).astype(np.float64)), 2.0, np)
               for m in (a, b)) / 2
    np.testing.assert_allclose(teacher.soft_targets(xb, np), want, rtol=1e-4, atol=1e-6)


def test_a_teacher_must_fit_the_students_data():
    x, y = blobs(n=120)
    teacher = fitted_teacher(x, y)
    student = dict(epochs=1, batch_size=16, device="cpu", teacher=teacher)
    with pytest.raises(ValueError, match="the teacher has classes"):
        mnist_xp.MLPClassifier(**student).fit(x[y < 3], y[y < 3])
    with pytest.raises(ValueError, match="reads 36 pixels"):
        mnist_xp.MLPClassifier(**student).fit(x[:, :25], y)
    with pytest.raises(ValueError, match="soft targets need loss='cross_entropy'"):
        mnist_xp.MLPClassifier(**student, loss="squared_error").fit(x, y)
    classic = fitted_teacher(x, y, loss="squared_error")
    with pytest.raises(ValueError, match="must be a cross-entropy network"):
        mnist_xp.MLPClassifier(epochs=1, device="cpu", teacher=classic).fit(x, y)
    with pytest.raises(ValueError, match="the teacher is not fitted: a teacher must be a fitted"):
        mnist_xp.MLPClassifier(epochs=1, device="cpu",
                               teacher=mnist_xp.MLPClassifier()).fit(x, y)


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_the_student_learns_what_its_teacher_says_in_proportion_to_the_weight(t):
    # a teacher trained on shifted labels disagrees with the labels on every image: the
    # student follows the labels at weight 0 and the teacher at weight 1
    x, y = blobs(n=200, seed=3)
    teacher = fitted_teacher(x, (y + 1) % 4, epochs=10, n_hidden=(30,))
    assert np.mean(teacher.predict(x) == (y + 1) % 4) > 0.95
    kw = dict(n_hidden=12, epochs=10, batch_size=16, device="cpu", random_state=0,
              teacher=teacher, temperature=t)
    labels = mnist_xp.MLPClassifier(**kw, distill_weight=0.0).fit(x, y)
    taught = mnist_xp.MLPClassifier(**kw, distill_weight=1.0).fit(x, y)
    assert np.mean(labels.predict(x) == y) > 0.95
    assert np.mean(taught.predict(x) == teacher.predict(x)) > 0.95


def fit(x, y, teacher, resume=None, stop_after=None):
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return stop_after is not None and calls["n"] >= stop_after

    clf = mnist_xp.MLPClassifier((12, 6), epochs=4, batch_size=16, device="cpu",
                                 random_state=5, dropout=0.2, teacher=teacher,
                                 augment={"rotate": 10, "elastic": 2})
    return clf.fit(x, y, resume=resume, should_stop=should_stop)


@pytest.mark.parametrize("stop_after", [7, 20])
def test_a_distilled_run_resumes_bit_for_bit(tmp_path, stop_after):
    x, y = blobs(n=90, side=6)
    teacher = fitted_teacher(x, y)
    whole = fit(x, y, teacher)
    with pytest.raises(TrainingInterrupted) as info:
        fit(x, y, teacher, stop_after=stop_after)
    save_state(tmp_path / "ck.npz", info.value.state, settings={}, classes=np.arange(4),
               fingerprint=data_fingerprint(x, y))
    loaded, _ = load_state(tmp_path / "ck.npz")
    resumed = fit(x, y, teacher, resume=loaded)
    for k in whole.params_:
        np.testing.assert_array_equal(resumed.params_[k], whole.params_[k], err_msg=k)


class _OnDevice(np.ndarray):
    """A NumPy array posing as device memory: reading a value on the host raises while
    `_OnDevice.locked`, as CuPy's ``allow_synchronize(False)`` does on a GPU."""

    locked = False

    def _read(self, *args, **kwargs):
        if _OnDevice.locked:
            raise AssertionError("a device array was read on the host inside the epoch")
        return getattr(np.ndarray, self._name)(self, *args, **kwargs)

    def __float__(self):
        if _OnDevice.locked:
            raise AssertionError("float() of a device array inside the epoch")
        return float(np.asarray(self))

    def __int__(self):
        if _OnDevice.locked:
            raise AssertionError("int() of a device array inside the epoch")
        return int(np.asarray(self))

    def __bool__(self):
        if _OnDevice.locked:
            raise AssertionError("bool() of a device array inside the epoch")
        return bool(np.asarray(self))

    def item(self, *args):
        if _OnDevice.locked:
            raise AssertionError(".item() of a device array inside the epoch")
        return np.asarray(self).item(*args)

    def tolist(self):
        if _OnDevice.locked:
            raise AssertionError(".tolist() of a device array inside the epoch")
        return np.asarray(self).tolist()


def test_the_teachers_forward_pass_stays_on_the_device():
    # a CUDA stand-in whose arrays refuse every host read during the epoch: the teacher's
    # inputs, weights and soft targets never leave the "device"
    xp = cuda_standin()
    xp.asarray = lambda a, dtype=None, copy=None: np.array(a, dtype=dtype).view(_OnDevice)
    for name in ("zeros", "ones", "empty", "zeros_like", "ones_like", "arange"):
        make = getattr(np, name)
        setattr(xp, name, lambda *a, _make=make, **k: _make(*a, **k).view(_OnDevice))
    device = Backend("cupy", xp, "cuda:0")
    x, y = blobs(n=64, side=6)
    arch = Architecture(36, (10, 6), 4)
    teacher_model = fitted_teacher(x, y)
    teacher = resolve_teacher(teacher_model, classes=np.arange(4), n_features=36,
                              dtype=np.float32, backend=device, temperature=3.0, weight=0.7)
    assert all(isinstance(v, _OnDevice) for params, _ in teacher.networks for v in params.values())
    params = {k: device.asarray(v) for k, v in
              init_params(arch, np.float32, np.random.default_rng(0)).items()}
    setup = EngineSetup(params, arch, SGD(0.1, momentum=0.9), device.asarray(x),
                        device.asarray(y), device, dropout=0.2, teacher=teacher)
    engine = GenericEngine(setup)
    order = device.asarray(np.random.default_rng(1).permutation(64))
    _OnDevice.locked = True
    try:
        loss, hits = engine.run_epoch(EpochInputs(order, 16, [0.1] * 4, dropout_key=9))
    finally:
        _OnDevice.locked = False
    assert np.isfinite(float(loss)) and 0 <= int(hits) <= 64


def test_the_teachers_forward_pass_never_syncs_on_cuda(cuda_backend):
    import cupyx

    b = cuda_backend
    x, y = blobs(n=200, n_features=36)
    teacher = resolve_teacher(fitted_teacher(x, y), classes=np.arange(4), n_features=36,
                              dtype=np.float32, backend=b, temperature=3.0, weight=0.7)
    arch = Architecture(36, 8, 4)
    with b.activate():
        params = {k: b.asarray(v) for k, v in
                  init_params(arch, np.float32, np.random.default_rng(0)).items()}
        setup = EngineSetup(params, arch, SGD(0.1, momentum=0.9), b.asarray(x), b.asarray(y),
                            b, teacher=teacher)
        order = b.asarray(np.random.default_rng(1).permutation(200))
        engine = GenericEngine(setup)
        b.synchronize()
        with cupyx.allow_synchronize(False):
            loss, _ = engine.run_epoch(EpochInputs(order, 32, [0.1] * 7))
    assert np.isfinite(float(b.to_numpy(loss)))


# -- through the command line ----------------------------------------------------------

def test_the_cli_distils_and_a_resumed_run_needs_the_same_teacher_file(tmp_path):
    from helpers_data import synthetic_mnist, write_mnist_dir
    from test_cli import assert_ok, assert_user_error

    data = write_mnist_dir(tmp_path / "data", synthetic_mnist(200, 50, seed=1))
    base = ["train", "--data-dir", data, "--device", "cpu", "--quiet"]
    assert_ok(run_cli(*base, "--hidden", "30,20", "--epochs", 2, "--save", "teacher.npz",
                      cwd=tmp_path))
    result = run_cli(*base, "--teacher", "teacher.npz", "--epochs", 2, "--checkpoint",
                     "ck.npz", "--save", "student.npz", cwd=tmp_path)
    assert_ok(result)
    assert "distilled from 1 teacher at temperature 2, weight 0.9" in result.stdout
    meta = mnist_xp.read_metadata(tmp_path / "student.npz")
    assert meta["estimator_params"]["teacher"] == [str(tmp_path / "teacher.npz")]
    assert len(meta["extra"]["teacher_sha256"]) == 1
    # the finished run's checkpoint, made a run of 4 epochs: 2 are left to resume
    state, info = load_state(tmp_path / "ck.npz")
    save_state(tmp_path / "ck.npz", state, settings=dict(info["settings"], epochs=4),
               classes=info["classes"], fingerprint=info["data_fingerprint"],
               metadata=info["extra"])
    original = (tmp_path / "teacher.npz").read_bytes()
    assert_ok(run_cli(*base, "--hidden", "30,21", "--epochs", 1, "--save", "teacher.npz",
                      cwd=tmp_path))
    assert_user_error(run_cli(*base, "--resume", "ck.npz", cwd=tmp_path),
                      "--resume ck.npz", "teacher.npz has changed since that run began")
    (tmp_path / "teacher.npz").write_bytes(original)
    assert_ok(run_cli(*base, "--resume", "ck.npz", cwd=tmp_path))
    assert_user_error(run_cli(*base, "--teacher", "missing.npz", cwd=tmp_path),
                      "--teacher missing.npz: no such file")
    assert_user_error(run_cli(*base, "--hidden", "5,0", cwd=tmp_path), "--hidden",
                      "each width must be at least 1")
    assert_user_error(run_cli(*base, "--temperature", "3", cwd=tmp_path),
                      "--temperature only applies to distillation")
    # a teacher of other classes, and one of the textbook loss: one line each, before any work
    other = write_mnist_dir(tmp_path / "other", synthetic_mnist(200, 50, seed=2))
    assert_ok(run_cli("train", "--data-dir", other, "--device", "cpu", "--quiet", "--epochs", 1,
                      "--preset", "classic", "--save", "classic.npz", cwd=tmp_path))
    line = assert_user_error(run_cli(*base, "--teacher", "classic.npz", "--loss",
                                     "cross_entropy", cwd=tmp_path),
                             "--teacher", "classic.npz", "must be a cross-entropy network")
    assert "Traceback" not in line
    x, y = blobs(n=120)
    mnist_xp.save(fitted_teacher(x, y), tmp_path / "blobs.npz")
    assert_user_error(run_cli(*base, "--teacher", "blobs.npz", cwd=tmp_path),
                      "--teacher", "blobs.npz reads 36 pixels per image")


def test_scikit_learn_clone_keeps_the_fitted_teacher_and_set_params_epochs_is_the_run():
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_score

    x, y = blobs(n=120)
    teacher = fitted_teacher(x, y)
    student = mnist_xp.MLPClassifier(8, epochs=2, batch_size=16, device="cpu", random_state=0,
                                     teacher=teacher)
    assert clone(student).teacher is teacher
    assert len(cross_val_score(student, x, y, cv=2)) == 2
    preset = mnist_xp.MLPClassifier.from_preset("default")
    assert preset.min_steps == 7035
    assert clone(preset).set_params(epochs=2).min_steps == 0
    assert clone(preset).set_params(epochs=2, min_steps=10).min_steps == 10


def test_the_health_page_names_teacher_files_without_their_directories():
    from mnist_xp.web.server import _without_paths

    meta = {"estimator_params": {"teacher": ["/home/someone/models/t.npz"], "epochs": 30}}
    assert _without_paths(meta)["estimator_params"] == {"teacher": ["t.npz"], "epochs": 30}
    assert _without_paths({"x": 1}) == {"x": 1}
