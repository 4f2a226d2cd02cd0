"""Knowledge distillation: the teachers' probabilities, the mixed targets, and a run that trains on them."""

import json

import keras
import numpy as np
import pytest

from cifarsep_lib import __main__ as cli
from cifarsep_lib import distillation, evaluation, input_pipeline, training


def _constant_teacher(probabilities) -> keras.Model:
    """A model that answers ``probabilities`` whatever the image: zero weights, the log-probabilities as bias."""
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(10, activation="softmax")
    outputs = dense(pooled)
    dense.set_weights([np.zeros((3, 10)), np.log(np.asarray(probabilities, "float32"))])
    return keras.Model(inputs, outputs)


def _lopsided_teacher(seed) -> keras.Model:
    """A small random network whose answer changes when the image is mirrored."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Flatten()(keras.layers.AveragePooling2D(8)(keras.layers.Rescaling(1 / 255)(inputs)))
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def _images(n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype="uint8")


def test_teacher_probabilities_average_flip_tta_over_the_teachers(tmp_path):
    a, b = _lopsided_teacher(1), _lopsided_teacher(2)
    a.save(tmp_path / "a.keras")
    x = _images()
    assert not np.allclose(evaluation.predict(a, x), evaluation.predict(a, x[:, :, ::-1]))  # the flip matters
    expected = (evaluation.predict(a, x, tta=True) + evaluation.predict(b, x, tta=True)) / 2
    got = distillation.teacher_probabilities([tmp_path / "a.keras", b], x)  # a file or a model
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got.dtype == np.float32 and np.allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_teacher_probabilities_need_a_teacher():
    with pytest.raises(ValueError, match="no teachers"):
        distillation.teacher_probabilities([], _images())


def test_soft_targets_mix_the_teachers_into_the_one_hot_labels():
    labels = np.array([[3], [0]], "uint8")
    teacher = np.array([[0.0] * 9 + [1.0], [0.1] * 10], "float32")
    np.testing.assert_array_equal(distillation.soft_targets(labels, teacher, 0.0), input_pipeline.one_hot(labels))
    np.testing.assert_array_equal(distillation.soft_targets(labels, teacher, 1.0), teacher)
    mixed = distillation.soft_targets(labels, teacher, 0.25)
    np.testing.assert_allclose(mixed[0, [3, 9]], [0.75, 0.25])
    np.testing.assert_allclose(mixed[1, 0], 0.75 + 0.025)
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    "weight, probs, message", [(1.5, np.full((2, 10), 0.1), r"\[0, 1\]"), (0.5, np.ones((3, 10)), "match")]
)
def test_soft_targets_refuse_a_weight_outside_0_1_and_a_shape_mismatch(weight, probs, message):
    with pytest.raises(ValueError, match=message):
        distillation.soft_targets(np.array([1, 2]), probs.astype("float32"), weight)


def test_cli_takes_several_teachers_and_their_weight(monkeypatch):
    seen = {}
    monkeypatch.setattr(training, "train", lambda recipe, **kw: seen.update(recipe=recipe))
    assert cli.main(["train"]) == 0 and not seen["recipe"].teachers and seen["recipe"].teacher_weight == 0.5
    assert cli.main(["train", "--teacher", "a.keras", "--teacher", "b.keras", "--teacher-weight", "0.7"]) == 0
    assert list(seen["recipe"].teachers) == ["a.keras", "b.keras"] and seen["recipe"].teacher_weight == 0.7


@pytest.mark.slow
def test_a_run_with_a_teacher_trains_on_the_mixed_targets_and_records_its_teachers(tmp_path, fake_cifar, monkeypatch):
    probabilities = np.linspace(1, 10, 10) / 55
    _constant_teacher(probabilities).save(tmp_path / "teacher.keras")
    training_targets = []
    make_dataset = training.make_dataset

    def recording(x, y, *args, shuffle=False, **kwargs):
        if shuffle:  # the training batches; validation keeps its labels
            training_targets.append(np.asarray(y))
        return make_dataset(x, y, *args, shuffle=shuffle, **kwargs)

    monkeypatch.setattr(training, "make_dataset", recording)
    recipe = training.Recipe(
        epochs=1, batch_size=64, train_subset=128, val_size=100, seed=3, teachers=(str(tmp_path / "teacher.keras"),)
    )
    training.train(recipe, out_dir=tmp_path / "run", data_dir=str(fake_cifar), tensorboard=False, verbose=0)
    (targets,) = training_targets
    assert targets.shape == (128, 10)
    hard = targets - 0.5 * probabilities  # weight 0.5: what is left is half a one-hot row
    np.testing.assert_allclose(np.sort(hard, axis=1)[:, :-1], 0.0, atol=1e-6)
    np.testing.assert_allclose(hard.max(axis=1), 0.5, atol=1e-6)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["recipe"]["teachers"] == [str(tmp_path / "teacher.keras")] and run["recipe"]["teacher_weight"] == 0.5


@pytest.mark.slow
def test_teachers_leave_the_students_initial_weights_as_without_them(tmp_path, fake_cifar, monkeypatch):
    """Loading a teacher draws random numbers; the student must still start where the same command without one does."""
    _lopsided_teacher(4).save(tmp_path / "teacher.keras")
    initial = []
    compile_model = training.compile_model

    def recording(model, *args, **kwargs):
        initial.append(model.get_weights())
        return compile_model(model, *args, **kwargs)

    monkeypatch.setattr(training, "compile_model", recording)
    for teachers in ((), (str(tmp_path / "teacher.keras"),)):
        recipe = training.Recipe(epochs=1, batch_size=64, train_subset=64, val_size=100, seed=5, teachers=teachers)
        training.train(
            recipe, out_dir=tmp_path / f"run{len(teachers)}", data_dir=str(fake_cifar), tensorboard=False, verbose=0
        )
    without, with_teacher = initial
    assert all(np.array_equal(a, b) for a, b in zip(without, with_teacher, strict=True))
