"""`urbanln demo --quick`: the whole chain, offline, ends in the ablation table."""

import json

VARIANTS = [
    "UrbanLN",
    "w/o stretch (77 tokens)",
    "w/o distillation",
    "single model, no fusion",
    "random weights",
    "pixels",
]
TARGETS = {"population", "carbon", "gdp", "nightlight"}


def test_demo_quick_runs_the_whole_chain(tmp_path, cli):
    result = cli("demo", tmp_path / "demo", "--quick", "--workers", "0", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert list(report["table"]) == VARIANTS
    for table in ("table", "std", "original_units"):
        for scores in report[table].values():
            assert set(scores) == TARGETS  # a 4 km city has 4×4 carbon cells: every target is probed
    assert all(std >= 0 for scores in report["std"].values() for std in scores.values())
    assert sum("UrbanLN vs pixels" in note for note in report["notes"]) == 2  # log(1 + target) and original units
    assert set(report["maps"]) == TARGETS
    for path in report["maps"].values():
        assert (tmp_path / "demo" / "probe" / path.split("/")[-1]).stat().st_size > 1000
    for artifact in ("tiles", "labels", "labels_log", "captions", "corpus", "runs/urbanln", "probe"):
        assert (tmp_path / "demo" / artifact / "urbanln.json").is_file()
    assert (
        json.loads((tmp_path / "demo" / "labels_log" / "urbanln.json").read_text())["transform"]["log_gdp"]
        == "log1p(gdp)"
    )
