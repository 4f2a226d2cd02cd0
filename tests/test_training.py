"""Training behaviour on tiny runs (a few hundred synthetic images, 2-3 epochs)."""

import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import FakeClock, batch_norm_kinds

from cifarsep_lib import callbacks, devices, input_pipeline, training

pytestmark = pytest.mark.slow

TINY = dict(model="sepnet", epochs=2, batch_size=64, train_subset=256, val_size=100, seed=7)


def _train(out, data, **overrides):
    recipe = training.Recipe(**{**TINY, **overrides})
    return training.train(recipe, out_dir=out, data_dir=str(data), tensorboard=False, verbose=0, deterministic=True)


def test_run_writes_checkpoints_history_and_throughput(tmp_path, fake_cifar):
    _, hist = _train(tmp_path / "run", fake_cifar)
    for name in ("best.keras", "final.keras", "history.csv", "history.json", "run.json"):
        assert (tmp_path / "run" / name).is_file(), name
    assert len(hist["loss"]) == 2 and all(v > 0 for v in hist["images_per_second"])
    assert not (tmp_path / "run" / "backup").exists()  # removed once training completes
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["device"] and run["params"] < 100_000
    assert run["machine"] == devices.describe_machine()


def test_same_seed_gives_same_history(tmp_path, fake_cifar):
    _, a = _train(tmp_path / "a", fake_cifar)
    _, b = _train(tmp_path / "b", fake_cifar)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert a[key] == b[key], key


def test_batchnorm_images_leave_checkpoints_with_statistics_of_clean_training_images(tmp_path, fake_cifar):
    """``Recipe(batchnorm_images=n)``: the saved model's BatchNorm statistics are those of its
    own weights on the first ``n`` clean training images (recomputing them changes nothing)."""
    from cifarsep_lib import batchnorm, evaluation
    from cifarsep_lib import data as cdata

    n, seed = 128, TINY["seed"]
    _, hist = _train(tmp_path / "run", fake_cifar, model="sepnet_fast", epochs=1, batchnorm_images=n)
    assert hist["batchnorm_seconds"][0] > 0
    (x, y), _ = cdata.load_cifar10(str(fake_cifar))
    (x, y), _ = cdata.train_val_split(x, y, TINY["val_size"], seed)
    x, _ = cdata.subset(x, y, TINY["train_subset"], seed)
    clean = x[np.random.default_rng(seed).permutation(len(x))][:n]
    saved = evaluation.load_model(tmp_path / "run" / "final.keras")
    stored = [keras.ops.convert_to_numpy(v).copy() for v in saved.non_trainable_weights]
    batchnorm.recompute_statistics(saved, clean)
    for old, new in zip(stored, saved.non_trainable_weights, strict=True):
        np.testing.assert_allclose(old, keras.ops.convert_to_numpy(new), rtol=1e-4, atol=1e-5)


def test_train_sets_a_whitening_stem_from_clean_training_images(tmp_path, fake_cifar):
    """The saved stem whitens exactly the patches of ``training.WHITENING_IMAGES`` clean training
    images (here all 256 of the subset), normalised as the model does, and training left it so.

    On those patches its first half of filters gives a covariance of exactly
    variance / (variance + epsilon), under 1e-3 from the identity for these random pixels;
    any other sample of the same kind of images is off by several times that.
    """
    from cifarsep_lib import batchnorm, evaluation, models, whitening
    from cifarsep_lib import data as cdata

    seed = TINY["seed"]
    _train(tmp_path / "run", fake_cifar, model="sepnet_fast_w", epochs=1)
    (x, y), _ = cdata.load_cifar10(str(fake_cifar))
    (x, y), _ = cdata.train_val_split(x, y, TINY["val_size"], seed)
    x, _ = cdata.subset(x, y, TINY["train_subset"], seed)
    stem = evaluation.load_model(tmp_path / "run" / "final.keras").get_layer("stem")
    half = keras.ops.convert_to_numpy(stem.pointwise_kernel)[0, 0, :, :12]

    def whitened_covariance(images):
        normalized = keras.ops.convert_to_numpy(models.normalize_rgb()(images.astype("float32")))
        patches = whitening.patch_vectors(normalized.astype("float64"), 2)
        return np.cov((patches @ half).T, bias=True)

    seen = whitened_covariance(batchnorm.clean_sample(x, training.WHITENING_IMAGES, seed))
    assert np.abs(seen - np.eye(12)).max() < 1e-3
    (other, _), _ = cdata.load_cifar10(str(fake_cifar))
    assert np.abs(whitened_covariance(other[-256:]) - np.eye(12)).max() > 2e-3


def test_without_a_validation_split_the_last_epoch_is_kept_with_recomputed_statistics(tmp_path, fake_cifar):
    """``Recipe(val_size=0)`` holds no images out, validates nothing, and keeps
    the last epoch's model as best.keras, its BatchNorm statistics recomputed all the same."""
    from cifarsep_lib import evaluation

    _, hist = _train(tmp_path / "run", fake_cifar, model="sepnet_fast", val_size=0, batchnorm_images=64)
    assert "val_accuracy" not in hist and len(hist["batchnorm_seconds"]) == 2
    assert all(seconds > 0 for seconds in hist["batchnorm_seconds"])
    rows = training.read_history(tmp_path / "run")
    assert len(rows) == 2 and np.isnan(rows[-1]["val_accuracy"])  # CSVLogger's "NA"
    best, final = (evaluation.load_model(tmp_path / "run" / name) for name in ("best.keras", "final.keras"))
    for a, b in zip(best.weights, final.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


@pytest.mark.parametrize("fused, kind", [(None, "fused"), (False, "keras")])
def test_recipe_trains_sepnet_with_the_fused_batch_norm_unless_told_not_to(tmp_path, fake_cifar, fused, kind):
    """By default a run builds the network with ``FusedBatchNormalization`` (and records that it did);
    ``fused_batchnorm=False`` gives it Keras' own layer."""
    from cifarsep_lib import evaluation

    model, _ = _train(tmp_path / "run", fake_cifar, model="sepnet_fast", epochs=1, fused_batchnorm=fused)
    saved = evaluation.load_model(tmp_path / "run" / "final.keras")
    for built in (model, saved):
        assert batch_norm_kinds(built) == {kind}
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["batchnorm_is_fused"] is (kind == "fused") and run["recipe"]["fused_batchnorm"] is fused


def test_the_fused_batch_norm_is_the_default_only_where_the_network_has_it():
    """The series' networks get the fused layer unless told otherwise; the base models keep Keras' own,
    also when a recipe built for another network is pointed at them."""
    assert all(training.Recipe(model=name).batchnorm_is_fused for name in ("sepnet", "sepnet_fast_s2", "mixsepnet"))
    assert not training.Recipe(fused_batchnorm=False).batchnorm_is_fused
    for name in ("base_model", "base_model_strict"):
        assert not training.Recipe(model=name).batchnorm_is_fused
        assert not dataclasses.replace(training.Recipe(), model=name).batchnorm_is_fused
    assert not training.assignment_recipe().batchnorm_is_fused
    assert training.Recipe(model="base_model", fused_batchnorm=True).batchnorm_is_fused  # build() refuses it


def test_cli_turns_the_fused_batch_norm_on_and_off(monkeypatch):
    from cifarsep_lib import __main__ as cli

    seen = {}
    monkeypatch.setattr(training, "train", lambda recipe, **kw: seen.update(recipe=recipe))
    for words, given in (([], None), (["--fused-batchnorm"], True), (["--no-fused-batchnorm"], False)):
        assert cli.main(["train", *words]) == 0 and seen["recipe"].fused_batchnorm is given


def test_schedule_warms_up_then_decays():
    sched = training.lr_schedule(training.Recipe(epochs=10, peak_lr=0.2, warmup_fraction=0.2), steps_per_epoch=10)
    lrs = [float(sched(step)) for step in (0, 10, 20, 60, 100)]
    assert lrs[0] < lrs[1] < lrs[2] and lrs[2] == pytest.approx(0.2, rel=1e-3)
    assert lrs[2] > lrs[3] > lrs[4] and lrs[4] == pytest.approx(0.002, rel=1e-2)


def test_assignment_recipe_is_constant_lr_adam_without_augmentation(tmp_path, fake_cifar, monkeypatch):
    recipe = training.assignment_recipe(epochs=3)
    assert (recipe.model, recipe.epochs, recipe.batch_size, recipe.augment) == ("base_model", 3, 128, False)
    model = training.compile_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), recipe, 10)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(1e-3)
    assert not model.loss.get_config()["label_smoothing"]

    built = []  # train() must not build the augmentation layers for this recipe
    monkeypatch.setattr(training, "augmentation", lambda *a: built.append(a))
    tiny = {k: v for k, v in TINY.items() if k not in ("model", "batch_size")}
    training.train(
        training.assignment_recipe(**tiny),
        out_dir=tmp_path / "run",
        data_dir=str(fake_cifar),
        tensorboard=False,
        verbose=0,
    )
    assert built == [] and (tmp_path / "run" / "best.keras").is_file()
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["recipe"]["optimizer"] == "adam" and run["params"] == 32_261
    assert run["epoch_count"] == TINY["epochs"]


@pytest.mark.parametrize("mixup", [0.0, 0.4])
def test_train_blends_the_training_batches_only_when_asked(tmp_path, fake_cifar, monkeypatch, mixup):
    class Stop(Exception):
        pass

    mixers = []

    def training_dataset(*args, **kwargs):
        if kwargs.get("shuffle"):  # the training pipeline, not validation's
            mixers.append(kwargs.get("mixer"))
            raise Stop

    monkeypatch.setattr(training, "make_dataset", training_dataset)
    with pytest.raises(Stop):
        _train(tmp_path / "run", fake_cifar, mixup=mixup)
    if mixup:
        assert isinstance(mixers[0], keras.layers.MixUp) and mixers[0].alpha == mixup
    else:
        assert mixers == [None]


def test_a_run_with_mixup_trains_and_records_it(tmp_path, fake_cifar):
    _, hist = _train(tmp_path / "run", fake_cifar, mixup=0.4)
    assert all(np.isfinite(hist["loss"]))
    assert json.loads((tmp_path / "run" / "run.json").read_text())["recipe"]["mixup"] == 0.4


def test_recipe_refuses_a_mixup_it_cannot_apply():
    with pytest.raises(ValueError, match="alpha"):
        training.Recipe(mixup=-0.2)
    with pytest.raises(ValueError, match="augment"):
        training.Recipe(mixup=0.2, augment=False)


def test_cli_picks_the_assignment_recipe_and_applies_overrides(monkeypatch):
    from cifarsep_lib import __main__ as cli

    seen = {}
    monkeypatch.setattr(training, "train", lambda recipe, **kw: seen.update(recipe=recipe))
    assert cli.main(["train", "--recipe", "assignment", "--epochs", "3"]) == 0
    assert seen["recipe"] == training.assignment_recipe(epochs=3)
    assert cli.main(["train"]) == 0 and seen["recipe"] == training.Recipe()


def test_cli_refuses_augmentation_options_the_assignment_recipe_would_ignore(monkeypatch, capsys):
    from cifarsep_lib import __main__ as cli

    monkeypatch.setattr(training, "train", lambda recipe, **kw: None)
    with pytest.raises(SystemExit):
        cli.main(["train", "--recipe", "assignment", "--translate", "0.1", "--alternating-flips"])
    assert (
        "--translate, --alternating-flips: the assignment's recipe trains without augmentation"
        in capsys.readouterr().err
    )
    assert cli.main(["train", "--translate", "0.1", "--test-at", "2,4,"]) == 0  # the series' recipe takes them
    with pytest.raises(SystemExit):
        cli.main(["train", "--recipe", "assignment", "--mixup", "0.2"])
    assert "--mixup: the assignment's recipe trains without augmentation" in capsys.readouterr().err


def test_a_time_budget_must_be_positive():
    with pytest.raises(ValueError, match="minutes must be positive"):
        training.Recipe(minutes=0)
    assert training.Recipe(minutes=0.5).epoch_count == training.EPOCH_CAP_UNDER_A_BUDGET


def test_cli_accepts_every_model_of_the_series_and_rejects_others(monkeypatch, capsys):
    from cifarsep_lib import __main__ as cli
    from cifarsep_lib import models

    seen = []
    monkeypatch.setattr(training, "train", lambda recipe, **kw: seen.append(recipe.model))
    for name in models.MODELS:
        assert cli.main(["train", "--model", name]) == 0
    assert seen == list(models.MODELS)
    with pytest.raises(SystemExit):
        cli.main(["train", "--model", "resnet50"])
    assert "invalid choice" in capsys.readouterr().err


def test_cli_augmentation_flags(monkeypatch):
    from cifarsep_lib import __main__ as cli

    seen = {}
    monkeypatch.setattr(training, "train", lambda recipe, **kw: seen.update(recipe=recipe))
    assert cli.main(["train"]) == 0 and seen["recipe"].whole_pixel_shifts is False
    assert cli.main(["train", "--whole-pixel-shifts"]) == 0 and seen["recipe"].whole_pixel_shifts is True
    assert seen["recipe"].alternating_flips is False
    assert cli.main(["train", "--alternating-flips"]) == 0 and seen["recipe"].alternating_flips is True


@pytest.mark.parametrize(
    "flag, value, field, default",
    [
        ("--translate", "0.0625", "translate", 0.125),
        ("--rotate", "15", "rotate", 0.0),
        ("--erasing", "0.5", "erasing", 0.0),
        ("--mixup", "0.2", "mixup", 0.0),
        ("--ema", "0.995", "ema_momentum", None),
        ("--low-res-epochs", "12", "low_res_epochs", 0),
        ("--low-res-size", "24", "low_res_size", 16),
        ("--minutes", "60", "minutes", None),
    ],
)
def test_cli_passes_recipe_options_to_the_recipe(monkeypatch, flag, value, field, default):
    from cifarsep_lib import __main__ as cli

    seen = {}
    monkeypatch.setattr(training, "train", lambda recipe, **kw: seen.update(recipe=recipe))
    assert cli.main(["train"]) == 0 and getattr(seen["recipe"], field) == default
    assert cli.main(["train", flag, value]) == 0 and getattr(seen["recipe"], field) == float(value)


def test_a_time_budget_without_epochs_is_not_cut_short_by_the_default_epochs():
    """With ``minutes`` and no ``epochs``, time ends the run; an explicit epoch count still caps it."""
    cap = training.EPOCH_CAP_UNDER_A_BUDGET
    assert training.Recipe().epoch_count == training.Recipe().default_epochs == 150 < cap
    assert training.Recipe(minutes=60).epoch_count == cap
    assert training.Recipe(minutes=60, epochs=30).epoch_count == 30
    assert training.assignment_recipe().epoch_count == 50
    assert training.assignment_recipe(minutes=60).epoch_count == cap
    assert training.assignment_recipe(minutes=60, epochs=30).epoch_count == 30


def test_a_time_budget_added_to_a_built_recipe_drops_its_default_epochs():
    """``dataclasses.replace`` keeps what was given, not what was resolved from it."""
    cap = training.EPOCH_CAP_UNDER_A_BUDGET
    assert dataclasses.replace(training.Recipe(), minutes=60).epoch_count == cap
    assert dataclasses.replace(training.assignment_recipe(), minutes=60).epoch_count == cap
    assert dataclasses.replace(training.Recipe(epochs=30), minutes=60).epoch_count == 30
    assert dataclasses.replace(training.Recipe(minutes=60), minutes=None).epoch_count == 150


def test_a_time_budget_from_the_command_line_is_not_cut_short_by_the_default_epochs(monkeypatch):
    from cifarsep_lib import __main__ as cli

    seen = {}
    monkeypatch.setattr(training, "train", lambda recipe, **kw: seen.update(recipe=recipe))
    cli.main(["train", "--minutes", "60"])
    assert seen["recipe"].epoch_count == training.EPOCH_CAP_UNDER_A_BUDGET > training.Recipe().epoch_count
    cli.main(["train", "--minutes", "60", "--epochs", "30"])  # an explicit cap stays
    assert seen["recipe"].epoch_count == 30
    cli.main(["train"])
    assert seen["recipe"].epoch_count == training.Recipe().epoch_count


def test_averaged_weights_go_to_validation_and_checkpoints_and_the_backup_comes_last(tmp_path):
    names = lambda cbs: [type(cb).__name__ for cb in cbs]  # noqa: E731
    plain = training._callbacks(tmp_path, 10, None, (), tensorboard=False)
    assert "SwapEMAWeights" not in names(plain) and plain[-1].ema is None
    averaged = training.Recipe(ema_momentum=0.99)
    run_callbacks = training._callbacks(tmp_path, 10, (None, None), (1,), tensorboard=False, recipe=averaged)
    order = names(run_callbacks)
    swap = order.index("SwapEMAWeights")
    assert swap < order.index("SafeCheckpoint") < order.index("CSVLogger") < order.index("TestAccuracyAt")
    assert order[-1] == "BackupAfterLogs" and run_callbacks[-1].ema is run_callbacks[swap]


def test_the_backup_holds_the_training_weights_not_their_average(tmp_path):
    """At an epoch's end the model holds the average (for the checkpoint and test points);
    the backup, saved after them, must still resume training from the training weights."""
    x, y = np.random.default_rng(0).random((64, 8), "float32"), np.arange(64) % 3
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(0.5, use_ema=True, ema_momentum=0.5), "sparse_categorical_crossentropy")
    ema = callbacks.SwapEMAWeights(swap_on_epoch=True)
    backup = callbacks.BackupAfterLogs(str(tmp_path / "backup"), ema)
    backup.delete_checkpoint = False  # keep it to read after fit
    seen = {}

    class AfterTheBackup(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:  # the last epoch makes the two equal; the first still tells them apart
                seen["average"] = [keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables]
                seen["training"] = [
                    keras.ops.convert_to_numpy(v) for v in self.model.optimizer._model_variables_moving_average
                ]
                shutil.copytree(tmp_path / "backup", tmp_path / "after_epoch_1")

    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[ema, backup, AfterTheBackup()])
    restored = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    restored.compile(keras.optimizers.SGD(0.5, use_ema=True, ema_momentum=0.5), "sparse_categorical_crossentropy")
    restored.optimizer.build(restored.trainable_variables)
    restored.load_weights(tmp_path / "after_epoch_1" / "latest.weights.h5")
    assert not np.allclose(seen["average"][0], seen["training"][0])
    for mine, expected in zip(restored.trainable_variables, seen["training"], strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(mine), expected)


def test_a_backup_broken_while_written_resumes_from_the_epoch_before(tmp_path):
    """Killed while writing epoch 2's weights: the metadata still says 1 epoch, the weights
    file is cut short. The resumed run falls back to epoch 1's copy instead of failing."""
    x, y = np.random.default_rng(0).random((32, 4), "float32"), np.arange(32) % 2

    def fit(epochs, seen):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile("sgd", "sparse_categorical_crossentropy")
        backup = callbacks.BackupAfterLogs(str(tmp_path / "backup"))
        backup.delete_checkpoint = False
        record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(epoch))
        model.fit(x, y, epochs=epochs, verbose=0, callbacks=[record, backup])

    fit(2, [])
    backup = tmp_path / "backup"
    shutil.copy(backup / f"{training.BACKUP_METADATA}.bkp", backup / training.BACKUP_METADATA)
    weights = backup / "latest.weights.h5"
    weights.write_bytes(weights.read_bytes()[:100])
    assert training.backed_up_epochs(tmp_path) == 1
    seen = []
    fit(3, seen)
    assert seen == [1, 2]


def test_ema_run_validates_with_the_averaged_weights_and_ends_with_them(tmp_path, fake_cifar):
    """Last epoch's recorded validation loss is that of final.keras, which holds the average.

    Without the swap, validation would score the training weights, and the loss of the
    final (averaged) model would differ from the one recorded.
    """
    model, hist = _train(tmp_path / "ema", fake_cifar, ema_momentum=0.8)
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == 0.8
    from cifarsep_lib import data as cdata

    (x_all, y_all), _ = cdata.load_cifar10(str(fake_cifar))
    _, (x_val, y_val) = cdata.train_val_split(x_all, y_all, TINY["val_size"], TINY["seed"])
    final = keras.saving.load_model(tmp_path / "ema" / "final.keras")
    val_loss = final.evaluate(input_pipeline.make_dataset(x_val, y_val, 1000), verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(val_loss, hist["val_loss"][-1], rtol=1e-5)


def test_cli_passes_workers_to_train(monkeypatch):
    from cifarsep_lib import __main__ as cli

    seen = {}
    monkeypatch.setattr(training, "train", lambda recipe, **kw: seen.update(kw))
    assert cli.main(["train"]) == 0 and seen["workers"] == 1
    assert cli.main(["train", "--workers", "4"]) == 0 and seen["workers"] == 4


def test_diverging_run_stops_with_advice_and_never_checkpoints_nan_weights(tmp_path, fake_cifar):
    """At a learning rate of 1e12 the loss turns NaN within a few epochs; the error names
    --peak-lr, and best.keras holds finite weights (the earlier run's, or an epoch of this
    one whose loss was still finite: with BatchNorm after every convolution, which epoch
    first turns NaN depends on the CPU's arithmetic)."""
    out = tmp_path / "run"
    _train(out, fake_cifar, epochs=1)
    with pytest.raises(FloatingPointError, match="peak-lr"):
        _train(out, fake_cifar, epochs=3, peak_lr=1e12, warmup_fraction=0.0)
    best = keras.saving.load_model(out / "best.keras")
    assert all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in best.weights)


def test_diverged_sees_an_infinite_loss_and_overflowed_weights():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert not training.diverged(0.5, model)
    assert training.diverged(float("inf"), model) and training.diverged(float("nan"), model)
    model.layers[0].kernel.assign(np.array([[np.inf], [0.0]], "float32"))
    assert training.diverged(0.5, model)


def test_recipe_optimizer_is_nesterov_sgd_decaying_kernels_only_with_smoothed_labels():
    """What every shipped run of the series' recipe trained with: Nesterov SGD, weight decay on
    the convolution and dense kernels but not on BatchNorm's scale and shift or on biases, and
    label smoothing."""
    from cifarsep_lib import models

    recipe = training.Recipe()
    model = training.compile_model(models.build("sepnet_fast"), recipe, steps_per_epoch=10)
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.nesterov
    assert optimizer.momentum == pytest.approx(recipe.momentum)
    assert optimizer.weight_decay == pytest.approx(recipe.weight_decay) and recipe.weight_decay > 0
    assert model.loss.get_config()["label_smoothing"] == pytest.approx(recipe.label_smoothing)
    assert recipe.label_smoothing > 0
    decayed = {w.path for w in model.trainable_weights if optimizer._use_weight_decay(w)}
    kernels = {w.path for w in model.trainable_weights if w.path.endswith("kernel")}
    assert decayed == kernels and len(kernels) < len(model.trainable_weights)


def test_unwritable_checkpoint_folder_fails_before_training(tmp_path, fake_cifar):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    start = time.perf_counter()
    with pytest.raises(OSError, match="cannot write checkpoints|another --out"):
        _train(blocker / "run", fake_cifar)
    assert time.perf_counter() - start < 5


def test_full_disk_fails_before_training(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(OSError, match="MB free"):
        training.check_writable(tmp_path / "run")


def _cli(out, data, epochs):
    return [
        sys.executable, "-m", "cifarsep_lib", "train", "--out", str(out), "--epochs", str(epochs),
        "--batch-size", "32", "--train-subset", "512", "--val-size", "100", "--seed", "3",
        "--no-tensorboard", "--deterministic", "--verbose", "0",
    ]  # fmt: skip


def test_killed_training_resumes_and_finishes(tmp_path, fake_cifar):
    """SIGKILL mid-epoch, rerun the same command: it resumes from the last epoch saved.

    Tolerance: the resumed run restarts the data order and augmentation random streams,
    so it is not bit-identical to an uninterrupted run; its final validation accuracy
    must be within 0.15 of it (on this 100-image validation set of random pixels both
    sit near chance, so the check is that resuming trains on, not that it converges the same).
    """
    env = {**os.environ, "CIFARSEP_DATA": str(fake_cifar)}
    out = tmp_path / "killed"
    resumable = [*_cli(out, fake_cifar, 3), "--test-at", "1,2,3"]
    proc = subprocess.Popen(resumable, env=env)
    history = out / "history.csv"
    deadline = time.time() + 240
    points = out / "test_points.json"
    backed_up = out / "backup" / training.BACKUP_METADATA  # written after epoch 1's logs
    while time.time() < deadline and not backed_up.is_file():
        time.sleep(0.2)
    time.sleep(0.5)  # now in epoch 2, or logging it, or backing it up
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "backup").is_dir(), "no backup written before the kill"
    before = training.logged_so_far(out)
    assert before.epochs in (1, 2) and [p["epoch"] for p in before.test_points] == list(range(1, before.epochs + 1))
    subprocess.run(resumable, env=env, check=True)
    epochs = [int(line.split(",")[0]) for line in history.read_text().splitlines()[1:]]
    assert epochs[0] == 0 and epochs[-1] == 2 and epochs.count(0) == 1, epochs
    assert not (out / "backup").exists()
    # The resumed run keeps the interrupted one's test points and training clock.
    test_points = json.loads(points.read_text())
    assert [p["epoch"] for p in test_points] == [1, 2, 3]
    with open(history, newline="") as f:
        seconds = np.cumsum([float(row["epoch_seconds"]) for row in csv.DictReader(f)])
    np.testing.assert_allclose([p["train_seconds"] for p in test_points], seconds, rtol=1e-6)

    straight = tmp_path / "straight"
    subprocess.run(_cli(straight, fake_cifar, 3), env=env, check=True)
    a = json.loads((out / "history.json").read_text())["val_accuracy"][-1]
    b = json.loads((straight / "history.json").read_text())["val_accuracy"][-1]
    assert np.isfinite(a) and abs(a - b) <= 0.15


def test_fresh_run_replaces_the_logs_of_a_finished_one(tmp_path, fake_cifar):
    """Training again into the folder of a finished run starts new logs instead of appending."""
    out = tmp_path / "run"
    _train(out, fake_cifar, epochs=1)
    assert training.logged_so_far(out) is None  # finished: nothing to resume
    _train(out, fake_cifar, epochs=2)
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 2


def _backed_up(out, epochs):
    (out / "backup").mkdir(parents=True)
    (out / "backup" / training.BACKUP_METADATA).write_text(json.dumps({"epoch": epochs, "batch": 0}))


def test_resumed_run_keeps_the_best_validation_accuracy_so_far(tmp_path):
    out = tmp_path / "run"
    _backed_up(out, 3)
    (out / "history.csv").write_text("epoch,epoch_seconds,val_accuracy\n0,10.5,0.4\n1,11.0,0.6\n2,9.5,0.5\n")
    (out / "test_points.json").write_text(json.dumps([{"epoch": 2, "train_seconds": 21.5, "test_accuracy": 0.55}]))
    state = training.logged_so_far(out)
    assert (state.epochs, state.train_seconds, state.best_val_accuracy) == (3, 31.0, 0.6)
    assert state.test_points[0]["epoch"] == 2
    run_callbacks = training._callbacks(out, 100, None, (), tensorboard=False)
    checkpoint = next(c for c in run_callbacks if isinstance(c, callbacks.SafeCheckpoint))
    assert checkpoint.best == 0.6  # a worse first resumed epoch will not replace best.keras


def test_a_run_killed_between_its_logs_and_its_backup_drops_that_epochs_logs(tmp_path):
    """Epoch 3 was logged (history row, test point) but not backed up: it is trained again,
    so its logs go, and the resumed run appends its own for it."""
    out = tmp_path / "run"
    _backed_up(out, 2)
    (out / "history.csv").write_text("epoch,epoch_seconds,val_accuracy\n0,10.5,0.4\n1,11.0,0.6\n2,9.5,0.7\n")
    points = [{"epoch": e, "train_seconds": 10.0 * e, "test_accuracy": 0.5} for e in (2, 3)]
    (out / "test_points.json").write_text(json.dumps(points))
    state = training.logged_so_far(out)
    assert (state.epochs, state.train_seconds, state.best_val_accuracy) == (2, 21.5, 0.6)
    assert [p["epoch"] for p in state.test_points] == [2]
    training._callbacks(out, 100, (None, None), (2, 3), tensorboard=False)
    assert len(training.read_history(out)) == 2
    assert [p["epoch"] for p in json.loads((out / "test_points.json").read_text())] == [2]


def test_a_resumed_run_without_validation_has_no_best_validation_accuracy(tmp_path):
    out = tmp_path / "run"
    _backed_up(out, 2)
    (out / "history.csv").write_text("epoch,epoch_seconds,val_accuracy\n0,10.5,NA\n1,11.0,NA\n")
    state = training.logged_so_far(out)
    assert (state.epochs, state.train_seconds, state.best_val_accuracy) == (2, 21.5, None)


def test_several_workers_build_the_model_before_fit(tmp_path, fake_cifar, monkeypatch):
    """With workers > 1 on the PyDataset path, ``train()`` builds the model on the validation
    set before ``fit``, which keeps Keras' enqueuer from shifting the epochs."""
    built = []
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")  # take the PyDataset path
    monkeypatch.setattr(devices, "accelerators", lambda: [])
    monkeypatch.setattr(training, "build_before_fit", lambda model, ds: built.append(len(ds)))
    recipe = training.Recipe(**{**TINY, "epochs": 1})
    for workers in (1, 2):
        training.train(recipe, tmp_path / f"w{workers}", str(fake_cifar), tensorboard=False, verbose=0, workers=workers)
    assert built == [1]  # only with 2 workers: the 100 validation images, one batch of up to 1,000


def test_auto_jit_compile_resolves_per_backend_instead_of_reading_as_true(monkeypatch):
    """``"auto"`` must reach ``model.compile``: set as ``model.jit_compile`` afterwards, the
    string stays ``"auto"``, which every backend reads as true (XLA on a CPU, torch.compile)."""
    from cifarsep_lib import models, speed

    model = training.compile_model(models.build("sepnet_fast"), training.Recipe(), 10)
    # Keras: on under JAX, and under TensorFlow where it has an accelerator; off on a CPU-only
    # TensorFlow machine and for PyTorch.
    from cifarsep_lib import devices

    backend = keras.backend.backend()
    expected = backend == "jax" or (backend == "tensorflow" and bool(devices.accelerators()))
    assert model.jit_compile is expected
    assert (
        training.compile_model(models.build("sepnet_fast"), training.Recipe(), 10, jit_compile=False).jit_compile
        is False
    )

    seen = []
    compile_model = training.compile_model
    monkeypatch.setattr(training, "compile_model", lambda *a, **k: seen.append(compile_model(*a, **k)) or seen[-1])
    speed.training_throughput("sepnet_fast", batch_size=8, steps=1, warmup_steps=1)
    assert seen[0].jit_compile is expected


def test_paired_step_times_train_every_model_in_turn():
    """One step time per round for each model, and each model really trained (its weights moved)."""
    from cifarsep_lib import speed

    def tiny(seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
        return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))

    built = {"a": tiny(0), "b": tiny(1)}
    before = {name: [w.copy() for w in m.get_weights()] for name, m in built.items()}
    times = speed.paired_step_times(built, batch_size=8, rounds=3, warmup_steps=1)
    assert list(times) == ["a", "b"]
    assert all(len(t) == 3 and (t > 0).all() for t in times.values())
    for name, model in built.items():
        assert not np.allclose(model.get_weights()[0], before[name][0]), name


def test_paired_step_table_gives_each_model_its_speed_and_ratio_to_the_first():
    from cifarsep_lib import models, speed

    built = {"fast": models.build("sepnet_fast"), "slow": models.build("sepnet_fast")}
    times = {"fast": np.array([0.25, 0.25, 0.3]), "slow": np.array([0.5, 0.5, 0.6])}
    title, fast, slow = speed.paired_step_table(built, times)
    assert title == "paired training steps, batch 256, 3 rounds (ratio: median of step-by-step speed vs fast)"
    assert fast.split() == ["fast", "87,706", "params", "median", "250", "ms/step", "1024", "images/s", "1.00x"]
    assert slow.split()[4:] == ["500", "ms/step", "512", "images/s", "0.50x"]


def test_lr_by_fraction_is_the_schedule_over_a_fraction_of_the_run():
    recipe = training.Recipe(epochs=10, peak_lr=0.2, warmup_fraction=0.2)
    by_step = training.lr_schedule(recipe, steps_per_epoch=10)
    by_fraction = training.lr_by_fraction(recipe)
    for step in range(101):  # the warm-up, its peak at step 20, the cosine decay, the floor
        assert by_fraction(step / 100) == pytest.approx(float(by_step(step)), rel=1e-5)
    assert by_fraction(1.5) == by_fraction(1.0) == pytest.approx(recipe.peak_lr * recipe.final_lr_fraction)
    assert by_fraction(-0.1) == by_fraction(0.0)
    assert isinstance(by_fraction(0.5), float)


def test_lr_by_fraction_does_no_tensor_work(monkeypatch):
    """TimeBudget calls it before every step: evaluating the Keras schedule there cost 51 ms
    per call under JAX and made GPU steps 10x slower (benchmarks/gpu_h200_callbacks_2026-11-28.txt)."""
    by_fraction = training.lr_by_fraction(training.Recipe(epochs=10, peak_lr=0.2))

    def no_tensors(*args, **kwargs):
        raise AssertionError("lr_by_fraction must not run tensor operations")

    monkeypatch.setattr(keras.optimizers.schedules.CosineDecay, "__call__", no_tensors)
    monkeypatch.setattr(keras.ops, "convert_to_numpy", no_tensors)
    assert [round(by_fraction(f), 6) for f in (0.0, 0.15, 1.0)] == [0.002, 0.2, 0.002]


def test_lr_by_fraction_without_warm_up_starts_at_the_peak():
    recipe = training.Recipe(epochs=10, peak_lr=0.2, warmup_fraction=0.0)
    by_step = training.lr_schedule(recipe, steps_per_epoch=10)
    by_fraction = training.lr_by_fraction(recipe)
    assert by_fraction(0.0) == pytest.approx(0.2)
    for step in (0, 33, 67, 100):
        assert by_fraction(step / 100) == pytest.approx(float(by_step(step)), rel=1e-5)


def test_a_time_budget_ends_training_before_the_epoch_cap(tmp_path, fake_cifar, monkeypatch):
    """``Recipe(minutes=...)``: training stops once the budget is spent, whatever ``epochs`` says.

    The clock ticks per reading, not per real second, so the number of epochs that fit the
    budget does not depend on how fast (or how busy) the machine is: a real 15-s budget
    was once spent by the first epoch alone on a busy machine, and 50 epochs on a fast one.
    """
    monkeypatch.setattr(training.time, "perf_counter", FakeClock(tick=1.0))
    cap = 1_000
    recipe = training.Recipe(**{**TINY, "epochs": cap, "minutes": 0.25, "train_subset": 128})
    out = tmp_path / "run"
    _, hist = training.train(recipe, out, str(fake_cifar), tensorboard=False, test_at_epochs=[cap], verbose=0)
    trained = sum(hist["epoch_seconds"])
    assert 1 < len(hist["loss"]) < cap
    assert 15.0 <= trained < 15.0 + 2 * max(hist["epoch_seconds"][1:])
    run = json.loads((out / "run.json").read_text())
    assert run["recipe"]["minutes"] == 0.25 and not (out / "backup").exists()
    # the cap is never reached; the last epoch, where the budget ran out, gets a test point
    points = json.loads((out / "test_points.json").read_text())
    assert [p["epoch"] for p in points] == [len(hist["loss"])]
    assert points[-1]["train_seconds"] == pytest.approx(trained)


def test_describe_machine_names_the_cpu_its_model_number_and_its_avx512(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    core = "processor\t: {}\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 {}\n"
    cpuinfo.write_text(core.format(0, "avx512f avx512bw") + "\n" + core.format(1, "avx512f"))
    described = devices.describe_machine(str(cpuinfo))
    assert described.endswith(", AMD EPYC (family 25, model 17), AVX-512") and "cores" in described
    cpuinfo.write_text(core.format(0, "").replace("cpu family\t: 25\nmodel\t\t: 17\n", ""))
    assert devices.describe_machine(str(cpuinfo)).endswith(", AMD EPYC, no AVX-512")  # no numbers: none made up
    assert devices.describe_machine(str(tmp_path / "absent")).endswith(" cores")  # no /proc: no CPU name


def test_describe_cores_counts_the_cores_taskset_leaves(monkeypatch):
    from cifarsep_lib import devices

    monkeypatch.setattr(devices.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert devices.describe_cores() == "2 cores"
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {1}, raising=False)
    assert devices.describe_cores() == "1 of 2 cores"  # `taskset -c 1`: one core of two
    assert devices.describe_device().endswith(", 1 of 2 cores)")
