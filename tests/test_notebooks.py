"""Every notebook runs headless, top to bottom in a fresh kernel, on the real data (small parameters)."""

from pathlib import Path

import pytest
from conftest import real_data_dir

papermill = pytest.importorskip("papermill")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"

# Small parameter sets that keep each notebook to about a minute on a 2-core CPU.
CI_PARAMETERS = {
    "01_data_exploration.ipynb": {},
    "02_separable_convolution_theory.ipynb": {},
    "03_model_construction.ipynb": {},
    "04_gpu_training.ipynb": {"epochs": 1, "train_subset": 512, "speed_steps": 2},
    "05_error_analysis.ipynb": {"max_test_images": 1000, "batchnorm_images": 1000},
}

pytestmark = pytest.mark.notebooks


@pytest.fixture
def real_data(monkeypatch):
    found = real_data_dir()
    if found is None:
        pytest.skip("real CIFAR-10 copy not found (set CIFARSEP_DATA)")
    monkeypatch.setenv("CIFARSEP_DATA", str(found))


@pytest.mark.parametrize("name", sorted(CI_PARAMETERS))
def test_notebook_runs_headless(name, tmp_path, real_data):
    params = dict(CI_PARAMETERS[name])
    if name.startswith("04_"):
        params["out_dir"] = str(tmp_path / "run")
    papermill.execute_notebook(
        str(NOTEBOOK_DIR / name),
        str(tmp_path / name),
        parameters=params,
        cwd=str(NOTEBOOK_DIR),
        kernel_name="python3",
        progress_bar=False,
    )


def test_notebook_without_data_fails_in_first_data_cell_with_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFARSEP_DATA", str(tmp_path / "no_such_folder"))
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(
            str(NOTEBOOK_DIR / "01_data_exploration.ipynb"),
            str(tmp_path / "out.ipynb"),
            cwd=str(NOTEBOOK_DIR),
            kernel_name="python3",
            progress_bar=False,
        )
    assert err.value.ename == "CifarDataError"
    assert "CIFARSEP_DATA" in err.value.evalue and "no_such_folder" in err.value.evalue
    # The failing cell is the first one that loads data: every earlier cell ran cleanly.
    import nbformat

    cells = [c for c in nbformat.read(tmp_path / "out.ipynb", as_version=4).cells if c.cell_type == "code"]
    failed = [i for i, c in enumerate(cells) if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    first_data_cell = next(i for i, c in enumerate(cells) if "load_cifar10" in c.source)
    assert failed == [first_data_cell]
