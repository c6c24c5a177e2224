"""``scripts/image_bpd_plot.py`` draws bench rows and ``hmmlvd image train`` results together."""
import importlib.util
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


def load_script():
    spec = importlib.util.spec_from_file_location("image_bpd_plot", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_margins_are_em_alone_minus_lvd_per_family_and_size() -> None:
    rows = [{"model": model, "tied": tied, "hidden_size": hidden, "num_parameters": size, "test_bpd": bpd}
            for model, tied, hidden, size, bpd in [
                ("lvd", True, 4, 4000, 3.40), ("em", True, 4, 4000, 3.47), ("lvd", True, 4, 1000, 3.5),
                ("em", True, 4, 1000, 3.52), ("lvd", True, 4, 1000, 9.0),          # a second row of a size: ignored
                ("lvd", False, 16, 2000, 3.3), ("hclt", True, 16, 2000, 3.0),     # no EM alone in this family
                ("em", True, 16, 8000, 3.2)]]
    found = load_script().margins(rows)
    assert list(found) == [(True, 4, 0.1)]                           # rows that do not say: the default pseudocount
    assert [size for size, _ in found[True, 4, 0.1]] == [1000, 4000]
    assert [round(lead, 6) for _, lead in found[True, 4, 0.1]] == [0.02, 0.07]


def test_families_of_another_pseudocount_are_apart(tmp_path: Path) -> None:
    """Rows of two files that differ only in their pseudocount are two families, each with its own margins."""
    script = load_script()
    small = bench_file(tmp_path / "small.json")
    results = json.loads(small.read_text())
    results["pseudocount"] = 0.01
    results["rows"] = [{**row, "test_bpd": row["test_bpd"] - (0.05 if row["model"] == "lvd" else 0.0)}
                       for row in results["rows"]]
    small.write_text(json.dumps(results))
    _, _, rows = script.load_rows([str(bench_file(tmp_path / "default.json")), str(small)])
    found = script.margins(rows)
    assert sorted(found) == [(True, 4, 0.01), (True, 4, 0.1)]
    assert [round(lead, 6) for _, lead in found[True, 4, 0.1]] == [0.1, 0.1]
    assert [round(lead, 6) for _, lead in found[True, 4, 0.01]] == [0.15, 0.15]
    assert script.family_label((True, 4, 0.01), rows) == "tied, H = 4, pseudocount 0.01"
    out = tmp_path / "both.png"
    done = run(str(tmp_path / "default.json"), str(small), "--margins", "--out", str(out))
    assert done.returncode == 0, done.stderr


def test_margins_panel_is_drawn_and_refused_without_pairs(tmp_path: Path) -> None:
    out = tmp_path / "margins.png"
    done = run(str(bench_file(tmp_path / "bench.json")), "--margins", "--title", "a budget", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lone = tmp_path / "lone.json"
    lone.write_text(json.dumps({"dataset": "fashion-mnist", "train_images": 100, "rows": [
        {"model": "lvd", "tied": True, "hidden_size": 4, "num_parameters": 10, "test_bpd": 3.0}]}))
    done = run(str(lone), "--margins", "--out", str(tmp_path / "none.png"))
    assert done.returncode != 0 and "--margins needs" in done.stderr
    assert not (tmp_path / "none.png").exists()
