"""`urbanln demo --quick`: the whole chain, offline, ends in the ablation table."""

import json


def test_demo_quick_runs_the_whole_chain(tmp_path, cli):
    result = cli("demo", tmp_path / "demo", "--quick", "--workers", "0", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert list(report["table"]) == ["UrbanLN", "w/o stretch (77 tokens)", "w/o distillation", "single model, no fusion",
                                     "random weights", "pixels"]
    for scores in report["table"].values():
        assert set(scores) == {"population", "gdp", "nightlight"}  # a 1 km city has one carbon cell: not probed
    for path in report["maps"].values():
        assert (tmp_path / "demo" / "probe" / path.split("/")[-1]).stat().st_size > 1000
    for artifact in ("tiles", "labels", "captions", "corpus", "runs/urbanln", "probe"):
        assert (tmp_path / "demo" / artifact / "urbanln.json").is_file()
