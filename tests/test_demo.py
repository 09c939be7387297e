"""`urbanln demo --quick`: the whole chain, offline, ends in the ablation table and its paired differences."""

import json
import math

import pytest

from urbanln_cli.evaluation.paired import paired_difference, t_quantile
from urbanln_cli.stages import demo_report

VARIANTS = [
    "UrbanLN",
    "w/o refinement",
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
    # every row but UrbanLN compared with it fold by fold, on the 5 folds of the one seed
    assert list(report["paired"]) == VARIANTS[1:]
    for variant, by_target in report["paired"].items():
        assert set(by_target) == TARGETS
        for target, d in by_target.items():
            assert (d["pairs"], d["folds"], d["seeds"]) == (5, 5, 1)
            assert d["favour_reference"] + d["favour_other"] <= 5
            assert d["mean"] == pytest.approx(report["table"][variant][target] - report["table"]["UrbanLN"][target])
            assert d["detectable"] == (abs(d["mean"]) >= d["threshold"])
    for variant in VARIANTS[1:]:  # one note per compared row, each target with a verdict
        (note,) = [n for n in report["notes"] if f", {variant} − UrbanLN (paired" in n]
        assert note.count("no detectable difference") + note.count(": UrbanLN higher") + note.count(
            ": UrbanLN lower"
        ) == len(TARGETS)
    assert sum("UrbanLN vs pixels" in note for note in report["notes"]) == 1  # original units
    # the chain: the UrbanLN corpus was checked and refined by sim:precise, the w/o-refinement one only checked
    assert report["settings"]["refine"] == "sim:precise" and report["settings"]["check"] == "vlm"
    refined = json.loads((tmp_path / "demo" / "corpus" / "urbanln.json").read_text())
    unrefined = json.loads((tmp_path / "demo" / "corpus_unrefined" / "urbanln.json").read_text())
    assert refined["counts"].get("refined", 0) > 0 and unrefined["counts"].get("refined", 0) == 0
    assert refined["counts"].get("checked", 0) > 0 and unrefined["counts"].get("checked", 0) > 0
    example = report["example"]
    assert example["refined"] != example["unrefined"]
    for name in ("corpus", "corpus_unrefined", "corpus_single"):
        lengths = report["tokens"][name]
        assert lengths["captions"] == 64 and lengths["p10"] <= lengths["p50"] <= lengths["p90"] <= lengths["max"]
        assert 0 <= lengths["share_over_77"] <= 1
    assert json.loads((tmp_path / "demo" / "report.json").read_text())["paired"] == report["paired"]
    assert set(report["maps"]) == TARGETS
    for path in report["maps"].values():
        assert (tmp_path / "demo" / "probe" / path.split("/")[-1]).stat().st_size > 1000
    for artifact in ("tiles", "labels", "labels_log", "captions", "corpus", "runs/urbanln", "runs/w_o_refinement"):
        assert (tmp_path / "demo" / artifact / "urbanln.json").is_file()
    assert (
        json.loads((tmp_path / "demo" / "labels_log" / "urbanln.json").read_text())["transform"]["log_gdp"]
        == "log1p(gdp)"
    )


@pytest.mark.slow
def test_demo_quick_with_two_seeds_pairs_folds_of_both(tmp_path, cli):
    result = cli("demo", tmp_path / "demo", "--quick", "--seeds", "2", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["settings"]["seeds"] == 2
    for by_target in report["paired"].values():
        for d in by_target.values():
            assert (d["pairs"], d["folds"], d["seeds"]) == (10, 5, 2)
    for variant in VARIANTS[:-1]:  # trained (or, random weights, drawn) once per seed; pixels are the same file
        assert all(v is not None and v >= 0 for v in report["seed_std"][variant].values())
    assert all(v == 0 for v in report["seed_std"]["pixels"].values())  # one file, paired with each seed
    assert (tmp_path / "demo" / "runs" / "urbanln_seed1" / "urbanln.json").is_file()
    assert (tmp_path / "demo" / "embeddings" / "random_weights_seed1.safetensors").is_file()


def test_seeds_must_be_positive(tmp_path, cli):
    result = cli("demo", tmp_path / "demo", "--quick", "--seeds", "0")
    assert result.exit_code == 2
    assert "--seeds 0" in result.stderr
    assert not (tmp_path / "demo").exists()


# ---------------------------------------------------------------- paired statistics on hand-built fold scores

UrbanLN = {0: {0: 0.80, 1: 0.70, 2: 0.85, 3: 0.60, 4: 0.75}}  # folds differ far more than the variants do


def test_a_consistent_loss_on_every_fold_is_detected():
    worse = {0: {f: r2 - d for (f, r2), d in zip(UrbanLN[0].items(), (0.05, 0.04, 0.06, 0.05, 0.045))}}
    d = paired_difference(UrbanLN, worse)
    assert d.mean == pytest.approx(-0.049)
    assert (d.pairs, d.folds, d.seeds, d.favour_reference, d.favour_other) == (5, 5, 1, 5, 0)
    assert d.se == pytest.approx(d.std / math.sqrt(5))  # one seed: the ordinary paired standard error
    assert d.se_seeds == 0
    assert d.threshold == pytest.approx(2.776 * d.se, rel=1e-3)
    assert d.detectable


def test_differences_that_change_sign_are_within_noise():
    mixed = {0: {f: r2 + d for (f, r2), d in zip(UrbanLN[0].items(), (0.05, -0.04, 0.03, -0.06, 0.01))}}
    d = paired_difference(UrbanLN, mixed)
    assert d.mean == pytest.approx(-0.002)
    assert (d.favour_reference, d.favour_other) == (2, 3)
    assert not d.detectable
    (note,) = demo_report.paired_notes({"w/o x": {"carbon": d}}, "R²")
    assert "carbon -0.002 ± " in note and "no detectable difference" in note and "UrbanLN higher on 2/5" in note


def test_seeds_pool_into_pairs_but_folds_are_the_units_of_the_noise_rule():
    ours = {0: {0: 0.8, 1: 0.7, 2: 0.6}, 1: {0: 0.82, 1: 0.69, 2: 0.61}}
    theirs = {0: {0: 0.75, 1: 0.66, 2: 0.61}, 1: {0: 0.80, 1: 0.66, 2: float("nan")}}
    d = paired_difference(ours, theirs)
    pairs = [-0.05, -0.04, 0.01, -0.02, -0.03]  # the nan pair is left out
    per_fold = [(-0.05 - 0.02) / 2, (-0.04 - 0.03) / 2, 0.01]
    mean_fold = sum(per_fold) / 3
    se = math.sqrt(sum((m - mean_fold) ** 2 for m in per_fold) / 2 / 3)
    per_seed = [(-0.05 - 0.04 + 0.01) / 3, (-0.02 - 0.03) / 2]
    se_seeds = abs(per_seed[0] - per_seed[1]) / math.sqrt(2) / math.sqrt(2)  # std (ddof 1) of two values / √2
    assert (d.pairs, d.folds, d.seeds) == (5, 3, 2)
    assert d.mean == pytest.approx(sum(pairs) / 5)
    assert d.se_folds == pytest.approx(se)
    assert d.se_seeds == pytest.approx(se_seeds)
    assert d.se == pytest.approx(math.hypot(se, se_seeds))
    assert d.threshold == pytest.approx(t_quantile(2) * d.se)
    assert d.favour_reference == 4


def test_a_difference_the_seeds_disagree_on_is_within_noise_though_every_fold_agrees():
    ours = {s: dict(UrbanLN[0]) for s in (0, 1)}
    jitter = (0.001, -0.001, 0.0, 0.002, -0.002)
    theirs = {
        0: {f: r2 + 0.03 + j for (f, r2), j in zip(UrbanLN[0].items(), jitter)},  # one run a little better everywhere
        1: {f: r2 - 0.02 + j for (f, r2), j in zip(UrbanLN[0].items(), jitter)},  # the next a little worse
    }
    d = paired_difference(ours, theirs)
    assert d.mean == pytest.approx(0.005)
    assert t_quantile(4) * d.se_folds < 0.005  # the folds alone would call it a difference
    assert d.se_seeds == pytest.approx(0.025)
    assert not d.detectable


def test_nothing_to_pair_is_not_a_difference():
    d = paired_difference(UrbanLN, {1: {0: 0.5}})
    assert d.pairs == 0 and not d.detectable and math.isnan(d.mean)
    assert d.as_dict()["mean"] is None


def test_summary_with_one_seed_is_the_probes_mean_and_std_over_folds():
    scores = {"UrbanLN": {"gdp": UrbanLN}, "pixels": {"gdp": {0: {f: r2 - 0.1 for f, r2 in UrbanLN[0].items()}}}}
    mean, std, seed_std = demo_report.summary(scores)
    values = list(UrbanLN[0].values())
    assert mean["UrbanLN"]["gdp"] == pytest.approx(sum(values) / 5)
    m = sum(values) / 5
    assert std["UrbanLN"]["gdp"] == pytest.approx(math.sqrt(sum((v - m) ** 2 for v in values) / 5))  # ddof 0
    assert math.isnan(seed_std["UrbanLN"]["gdp"])
    paired = demo_report.paired(scores, ["gdp"])
    assert list(paired) == ["pixels"] and paired["pixels"]["gdp"].mean == pytest.approx(-0.1)


def test_fold_scores_pair_an_unseeded_baseline_with_every_seed():
    class Run:
        def __init__(self, embeddings, target, r2s):
            self.embeddings, self.target = embeddings, target
            self.folds = [{"fold": k, "r2": r2} for k, r2 in enumerate(r2s)]

    runs = [Run("urbanln", "log_gdp", [0.5, 0.6]), Run("urbanln_seed1", "log_gdp", [0.55, 0.65])]
    runs.append(Run("pixels", "log_gdp", [0.4, 0.3]))
    owners = {"urbanln": [("UrbanLN", 0)], "urbanln_seed1": [("UrbanLN", 1)], "pixels": [("pixels", 0), ("pixels", 1)]}
    scores = demo_report.fold_scores(runs, owners, "log_")
    assert scores["UrbanLN"]["gdp"] == {0: {0: 0.5, 1: 0.6}, 1: {0: 0.55, 1: 0.65}}
    d = paired_difference(scores["UrbanLN"]["gdp"], scores["pixels"]["gdp"])
    assert (d.pairs, d.seeds, d.favour_reference) == (4, 2, 4)
