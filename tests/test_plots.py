"""Tests of cifarsep_lib.plots: every figure function returns a Figure showing the right data."""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from cifarsep_lib import plots

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def toy():
    """12 random uint8 images of 3 classes (6, 4 and 2 images)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    labels = np.array([0] * 6 + [1] * 4 + [2] * 2).reshape(-1, 1)
    return images, labels


def test_image_grid_keeps_its_signature(toy):
    images, _ = toy
    fig = plots.image_grid(images[:5], titles=list("abcde"), ncols=4, size=1.0, title_colors=["red"] * 5, suptitle="t")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 8  # two rows of four
    assert [ax.get_title() for ax in fig.axes[:5]] == list("abcde")


def test_class_samples_grid_has_one_row_per_class(toy):
    images, labels = toy
    fig = plots.class_samples_grid(images, labels, class_names=("x", "y", "z"), per_class=3, title="toy")
    assert fig._suptitle.get_text() == "toy"
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 9
    assert [fig.axes[r * 3].get_ylabel() for r in range(3)] == ["x", "y", "z"]
    # class 2 has only 2 images: the third cell of its row stays empty
    assert [len(ax.images) for ax in fig.axes[6:]] == [1, 1, 0]


def test_class_samples_grid_shows_only_images_of_the_row_class(toy):
    images, labels = toy
    fig = plots.class_samples_grid(images, labels, class_names=("x", "y", "z"), per_class=2, classes=[1])
    assert len(fig.axes) == 2
    shown = [ax.images[0].get_array() for ax in fig.axes]
    members = images[labels.reshape(-1) == 1]
    for picture in shown:
        assert any(np.array_equal(picture, m) for m in members)


def test_class_balance_bars_are_the_counts(toy):
    _, labels = toy
    fig = plots.class_balance({"train": labels, "test": np.array([0, 1, 1, 2, 2, 2])}, class_names=("x", "y", "z"))
    assert isinstance(fig, Figure)
    heights = [round(p.get_height()) for p in fig.axes[0].patches if p.get_height() > 0]
    assert sorted(heights) == sorted([6, 4, 2, 1, 2, 3])


def test_pixel_histograms_one_curve_per_channel():
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    images[..., 0] = 10
    images[..., 1] = 200
    images[..., 2] = 255
    fig = plots.pixel_histograms(images)
    assert isinstance(fig, Figure)
    lines = [line for line in fig.axes[0].lines if len(line.get_xdata()) == 256]
    assert len(lines) == 3
    for line, value in zip(lines, (10, 200, 255), strict=True):
        share = np.asarray(line.get_ydata())
        assert share[value] == pytest.approx(1.0)
        assert share.sum() == pytest.approx(1.0)
    assert "mean 200.0" in fig.axes[0].get_legend().get_texts()[1].get_text()


def test_class_means_hand_example():
    images = np.zeros((3, 2, 2, 3), dtype=np.uint8)
    images[0] = 10
    images[1] = 30
    images[2] = 255
    means = plots.class_means(images, np.array([[0], [0], [2]]), num_classes=3)
    assert means.shape == (3, 2, 2, 3)
    np.testing.assert_allclose(means[0], 20.0)
    assert np.all(np.isnan(means[1]))  # class 1 has no images
    np.testing.assert_allclose(means[2], 255.0)


def test_class_means_grid(toy):
    images, labels = toy
    fig = plots.class_means_grid(images, labels, class_names=("x", "y", "z"), ncols=3)
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["x", "y", "z"]


def test_training_figures():

    from cifarsep_lib import training

    recipe = training.Recipe(epochs=2)
    fig = plots.schedule_figure(training.lr_schedule(recipe, 10), 20, 10)
    ys = fig.axes[0].lines[0].get_ydata()
    assert len(ys) == 21 and max(ys) == pytest.approx(recipe.peak_lr, rel=0.05)
    hist = {"loss": [2.0, 1.5], "val_loss": [2.1, 1.7], "accuracy": [0.3, 0.5], "val_accuracy": [0.25, 0.45]}
    assert len(plots.history_figure(hist).axes) == 2


def _write_one_test_point(tmp_path, names) -> None:
    """A ``NAME_test_points.json`` beside results.json for each name: one test point, 50 % after a minute."""
    import json

    for name in names:
        (tmp_path / f"{name}_test_points.json").write_text(
            json.dumps([{"epoch": 1, "train_seconds": 60, "test_accuracy": 0.5}])
        )


def test_results_figure_reads_test_points(tmp_path):
    _write_one_test_point(tmp_path, ["m"])
    results = {"models": [{"name": "m", "params": 90_000, "test_accuracy": 0.9}]}
    fig = plots.results_figure(results, base_dir=tmp_path)
    assert "m" in [line.get_label() for line in fig.axes[0].lines]


def _legend_names(ax) -> list[str]:
    return [text.get_text() for text in ax.get_legend().get_texts()]


def _runs_on(hardware: dict, tmp_path) -> dict:
    """results.json with one 90 %-ish run per entry of ``hardware`` (run name -> hardware field)."""
    _write_one_test_point(tmp_path, list(hardware))
    return {
        "models": [
            {"name": name, "params": 90_000, "test_accuracy": 0.9, "hardware": where}
            for name, where in hardware.items()
        ]
    }


def _minutes_axis_runs(fig) -> list[str]:
    return [line.get_label() for line in fig.axes[0].lines if not line.get_label().startswith("_")]


def test_results_figure_keeps_gpu_runs_off_the_cpu_minutes_axis(tmp_path):
    results = _runs_on({"cpu_run": "CPU (x86_64, 2 cores)", "gpu_run": "NVIDIA H100 80GB HBM3"}, tmp_path)
    fig = plots.results_figure(results, base_dir=tmp_path)
    assert _minutes_axis_runs(fig) == ["cpu_run"]
    gpu_dots = [dots for dots in fig.axes[1].collections if dots.get_label() == "gpu_run"]
    cpu_dots = [dots for dots in fig.axes[1].collections if dots.get_label() == "cpu_run"]
    assert len(gpu_dots) == len(cpu_dots) == 1
    assert gpu_dots[0].get_paths()[0] != cpu_dots[0].get_paths()[0]  # a square, not a circle


def test_results_figure_keeps_one_core_runs_off_the_two_core_minutes_axis(tmp_path):
    results = _runs_on({"two_cores": "CPU (x86_64, 2 cores)", "one_core": "CPU (x86_64, 1 of 2 cores)"}, tmp_path)
    fig = plots.results_figure(results, base_dir=tmp_path)
    assert _minutes_axis_runs(fig) == ["two_cores"]
    assert {dots.get_label() for dots in fig.axes[1].collections} == {"two_cores", "one_core"}
    one_core = plots.results_figure(results, base_dir=tmp_path, cores=1)
    assert _minutes_axis_runs(one_core) == ["one_core"]
    assert "1-core" in one_core.axes[0].get_xlabel()


def test_results_figure_keeps_runs_that_shared_the_cpu_off_the_minutes_axis(tmp_path):
    shared = "CPU (x86_64, 2 cores shared by 3 runs)"
    results = _runs_on({"alone": "CPU (x86_64, 2 cores)", "shared": shared}, tmp_path)
    fig = plots.results_figure(results, base_dir=tmp_path)
    assert _minutes_axis_runs(fig) == ["alone"]
    assert {dots.get_label() for dots in fig.axes[1].collections} == {"alone", "shared"}


def _colours(fig) -> tuple[dict, dict]:
    """Each run's colour on the minutes axis and on the parameters axis, as hex."""
    import matplotlib.colors as mcolors

    runs = [line for line in fig.axes[0].lines if not line.get_label().startswith("_")]  # not the guide lines
    lines = {line.get_label(): mcolors.to_hex(line.get_color()) for line in runs}
    dots = {
        dots.get_label(): mcolors.to_hex(dots.get_facecolor()[0], keep_alpha=False) for dots in fig.axes[1].collections
    }
    return lines, dots


def _runs_of(networks: dict, tmp_path) -> list[dict]:
    """results.json entries: ``networks`` maps a network's name to its runs' test accuracies."""
    models = []
    for net, accuracies in networks.items():
        for i, acc in enumerate(accuracies):
            models.append({"name": f"{net}_run{i}", "model": net, "params": 90_000, "test_accuracy": acc})
    _write_one_test_point(tmp_path, [m["name"] for m in models])
    return models


def test_results_figure_colours_runs_by_network_in_both_panels(tmp_path):
    models = _runs_of({"sepnet": [0.88, 0.90, 0.89], "base_model": [0.82, 0.85]}, tmp_path)
    lines, dots = _colours(plots.results_figure({"models": models}, base_dir=tmp_path))
    assert lines == {name: dots[name] for name in lines}  # one colour per run in both panels
    assert len({lines[f"sepnet_run{i}"] for i in range(3)}) == 1
    assert len({lines[f"base_model_run{i}"] for i in range(2)}) == 1
    assert lines["sepnet_run0"] != lines["base_model_run0"]


def test_results_figure_draws_each_networks_best_run_bold(tmp_path):
    models = _runs_of({"sepnet": [0.88, 0.90, 0.89], "base_model": [0.85, 0.82]}, tmp_path)
    fig = plots.results_figure({"models": models}, base_dir=tmp_path)
    widths = {line.get_label(): line.get_linewidth() for line in fig.axes[0].lines}
    bold = {name for name, width in widths.items() if width > 2 and not name.startswith("_")}
    assert bold == {"sepnet_run1", "base_model_run0"}


def test_results_figure_legend_names_networks_not_runs(tmp_path):
    models = _runs_of({"sepnet": [0.8 + i / 1000 for i in range(25)], "base_model": [0.8] * 5}, tmp_path)
    models.append(
        {"name": "gpu_run", "model": "mixsepnet", "params": 80_000, "test_accuracy": 0.87, "hardware": "H100"}
    )
    results = {"models": models, "main_model": "sepnet_run3"}
    names = _legend_names(plots.results_figure(results, base_dir=tmp_path).axes[1])
    assert names == ["sepnet", "base_model", "mixsepnet", "CPU run", "GPU run", "main model"]


def test_results_figure_marks_the_main_model_with_a_star(tmp_path):
    models = _runs_of({"sepnet": [0.88, 0.90]}, tmp_path)
    fig = plots.results_figure({"models": models, "main_model": "sepnet_run0"}, base_dir=tmp_path)
    sizes = {dots.get_label(): dots.get_sizes()[0] for dots in fig.axes[1].collections}
    assert sizes["sepnet_run0"] > sizes["sepnet_run1"]


def test_results_figure_puts_minutes_on_a_log_axis_with_the_two_budgets_marked(tmp_path):
    import json

    for name, seconds in (("short", [30, 600]), ("long", [600, 18_000])):
        points = [{"epoch": i + 1, "train_seconds": s, "test_accuracy": 0.5} for i, s in enumerate(seconds)]
        (tmp_path / f"{name}_test_points.json").write_text(json.dumps(points))
    models = [{"name": n, "params": 90_000, "test_accuracy": 0.8} for n in ("short", "long")]
    ax_time = plots.results_figure({"models": models}, base_dir=tmp_path).axes[0]
    assert ax_time.get_xscale() == "log"
    vertical = [line.get_xdata()[0] for line in ax_time.lines if len(set(line.get_xdata())) == 1]
    assert sorted(vertical) == [10, 60]
