"""``scripts/image_bpd_plot.py`` draws bench rows and ``hmmlvd image train`` results together."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "image_bpd_plot.py"


def bench_file(path: Path, dataset: str = "fashion-mnist") -> Path:
    rows = [{"model": model, "tied": True, "hidden_size": 4, "num_parameters": size, "test_bpd": bpd}
            for model, size, bpd in [("lvd", 1000, 3.5), ("em", 1000, 3.6), ("lvd", 4000, 3.4), ("em", 4000, 3.5)]]
    path.write_text(json.dumps({"dataset": dataset, "train_images": 100, "rows": rows}))
    return path


def recipe_file(path: Path) -> Path:
    models = [{"model": "lvd", "num_parameters": 9000, "test_bpd": 3.3},
              {"model": "em", "num_parameters": 9000, "test_bpd": 3.45}]
    path.write_text(json.dumps({"dataset": "fashion-mnist", "train_images": 100, "models": models,
                                "config": {"tied": True, "hidden_size": 4}}))
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_draws_bench_rows_and_recipe_results_together(tmp_path: Path) -> None:
    out = tmp_path / "families.png"
    done = run(str(bench_file(tmp_path / "bench.json")), str(recipe_file(tmp_path / "results.json")), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_refuses_files_of_different_datasets(tmp_path: Path) -> None:
    done = run(str(bench_file(tmp_path / "a.json", "digits")), str(recipe_file(tmp_path / "b.json")),
               "--out", str(tmp_path / "x.png"))
    assert done.returncode != 0 and "different datasets" in done.stderr
    assert not (tmp_path / "x.png").exists()
