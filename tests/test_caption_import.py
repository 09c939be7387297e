"""`urbanln caption --import`: captions made elsewhere become a normal captions artifact, with no server."""

import hashlib
import json

import datasets
import pytest

from tests.fakes.rasters import make_image_folder
from urbanln_cli import artifacts
from urbanln_cli.errors import InputError, OutputExistsError, OutputLocked, UsageProblem
from urbanln_cli.stages.caption import CaptionConfig, caption, caption_features
from urbanln_cli.stages.tile import TileConfig, tile


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    """Six pictures in photos/ and two in photos/sub/ (img00 and img01 twice: twin file names)."""
    folder = tmp_path_factory.mktemp("pics")
    make_image_folder(folder / "photos", n=6, size=32, corrupt=0, seed=1)
    make_image_folder(folder / "photos" / "sub", n=2, size=32, corrupt=0, seed=2)
    return tile(TileConfig(inputs=(folder / "photos",), out=folder / "tiles", workers=1)).out


def _ids(tiles):
    return datasets.load_from_disk(str(tiles))["tile_id"]


def _rows(out):
    return datasets.load_from_disk(str(out)).to_list()


def _manifest(out):
    return json.loads((out / "urbanln.json").read_text())


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _error_lines(result):
    lines = result.stderr.strip().splitlines()
    assert result.stdout == ""
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), result.stderr
    return lines


def test_tile_ids_of_an_image_folder(tiles):
    assert sorted(_ids(tiles)) == [
        "photos/img00",
        "photos/img01",
        "photos/img02",
        "photos/img03",
        "photos/img04",
        "photos/img05",
        "photos/sub/img00",
        "photos/sub/img01",
    ]


def test_jsonl_by_image_in_every_form_with_several_candidates(tiles, tmp_path, cli):
    records = [
        {"image": "img02.png", "caption": "A road with houses."},  # file name, with extension
        {"image": "img03", "caption": "A park."},  # file name, without
        {
            "image": "photos/img04.png",
            "caption": "A river. No cars are visible.",
            "model": "qwen",
        },  # from the folder above
        {"image": "/data/somewhere/photos/img05.jpg", "caption": "Farmland."},  # a longer path ending in the tile's
        {"image": "sub/img00.png", "caption": "One", "model": "human"},  # inside the folder: not ambiguous
        {"image": "sub/img00.png", "caption": "Two", "model": "human"},
        {"image": "./sub/img00.png", "caption": "Three", "model": "human"},
        {"tile_id": "photos/img02", "caption": "   "},  # empty: left out, counted
    ]
    path = _jsonl(tmp_path / "ucm.jsonl", records)
    result = cli("caption", tiles, "--import", path, "-o", tmp_path / "cap")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "cap")  # stdout: the output path only
    rows = _rows(tmp_path / "cap")
    order = {t: i for i, t in enumerate(_ids(tiles))}
    assert [r["tile_id"] for r in rows] == sorted((r["tile_id"] for r in rows), key=order.get)  # in the tiles' order
    got = {(r["tile_id"], r["model"]): r["caption"] for r in rows}
    assert got == {
        ("photos/img02", "ucm"): "A road with houses.",
        ("photos/img03", "ucm"): "A park.",
        ("photos/img04", "qwen"): "A river. No cars are visible.",
        ("photos/img05", "ucm"): "Farmland.",
        ("photos/sub/img00", "human#1"): "One",
        ("photos/sub/img00", "human#2"): "Two",
        ("photos/sub/img00", "human#3"): "Three",
    }
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    tiles_sha = dict(zip(*(datasets.load_from_disk(str(tiles))[c] for c in ("tile_id", "image_sha256"))))
    for r in rows:
        assert r["model_digest"] == sha[:12] and r["prompt_id"] == "imported" and r["latency_s"] == 0
        assert r["error"] is None and r["prompt_tokens"] is None and r["trusted"] is False
        assert r["image_sha256"] == tiles_sha[r["tile_id"]]
    assert set(datasets.load_from_disk(str(tmp_path / "cap")).features) == set(caption_features(trusted=True))
    manifest = _manifest(tmp_path / "cap")
    assert manifest["stage"] == "captions" and manifest["trusted"] is False and manifest["rows"] == 7
    (entry,) = [i for i in manifest["inputs"] if i["stage"] == "import"]
    assert entry["sha256"] == sha and entry["rows"] == 8 and entry["matched"] == 7 and entry["empty"] == 1
    assert manifest["inputs"][0]["stage"] == "tiles"
    assert manifest["counts"]["empty_rows"] == 1 and manifest["counts"]["tiles_without_captions"] == 3
    assert set(manifest["models"]) == {"ucm", "qwen", "human#1", "human#2", "human#3"}
    assert "empty caption" in result.stderr


def test_csv_by_tile_id_trusted(tiles, tmp_path, cli):
    path = tmp_path / "panel.csv"
    path.write_text(
        'tile_id,caption,model\nphotos/img00,"A square, with trees.",a\nphotos/img00,"Trees.",b\nphotos/img01,"A '
        'lake.",a\n'
    )
    result = cli("caption", tiles, "--import", path, "--trusted", "-o", tmp_path / "cap", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rows"] == 3 and summary["imports"][0]["by_tile_id"] == 3
    rows = _rows(tmp_path / "cap")
    assert [(r["tile_id"], r["model"], r["caption"]) for r in rows] == [
        ("photos/img00", "a", "A square, with trees."),
        ("photos/img00", "b", "Trees."),
        ("photos/img01", "a", "A lake."),
    ]
    assert all(r["trusted"] is True for r in rows)
    assert _manifest(tmp_path / "cap")["trusted"] is True


def test_parquet_lists_and_two_files(tiles, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"image": ["img02.png", "img03.jpg"], "caption": [["x one", "x two"], ["y"]]}),
        tmp_path / "hum.parquet",
    )
    second = _jsonl(tmp_path / "more.jsonl", [{"tile_id": "photos/img03", "caption": "y again", "model": "hum"}])
    result = caption(CaptionConfig(tiles=tiles, out=tmp_path / "cap", imports=(tmp_path / "hum.parquet", second)))
    rows = {(r["tile_id"], r["model"]): r for r in _rows(result.out)}
    # "hum" has several rows of a tile (in the parquet list, and across both files): every row of it is numbered
    assert {k: r["caption"] for k, r in rows.items()} == {
        ("photos/img02", "hum#1"): "x one",
        ("photos/img02", "hum#2"): "x two",
        ("photos/img03", "hum#1"): "y",
        ("photos/img03", "hum#2"): "y again",
    }
    assert rows[("photos/img03", "hum#2")]["host"] == "import:more.jsonl"
    assert [i["path"] for i in result.manifest["inputs"]] == [str(tiles), str(tmp_path / "hum.parquet"), str(second)]


def test_a_few_unmatched_rows_are_counted_and_named(tiles, tmp_path, cli):
    records = [{"image": f"img0{i}.png", "caption": "A road."} for i in range(2, 6)] + [
        {"image": "nowhere.png", "caption": "Lost."}
    ]
    result = cli("caption", tiles, "--import", _jsonl(tmp_path / "c.jsonl", records), "-o", tmp_path / "cap")
    assert result.exit_code == 0, result.stderr
    assert "1 of 5 rows" in result.stderr and "'nowhere.png'" in result.stderr
    manifest = _manifest(tmp_path / "cap")
    assert manifest["counts"]["unmatched_rows"] == 1 and manifest["rows"] == 4
    assert manifest["inputs"][1]["unmatched_examples"] == ["image 'nowhere.png'"]


def test_twin_file_names_are_ambiguous(tiles, tmp_path):
    path = _jsonl(
        tmp_path / "c.jsonl",
        [{"image": "img00.png", "caption": "Which?"}] + [{"image": f"img0{i}", "caption": "Ok."} for i in (2, 3, 4)],
    )
    result = caption(CaptionConfig(tiles=tiles, out=tmp_path / "cap", imports=(path,)))
    assert result.counts["ambiguous_rows"] == 1 and result.rows == 3
    assert any("several" in w for w in result.warnings)


def test_mostly_unmatched_file_is_refused_with_the_id_forms(tiles, tmp_path, cli):
    records = [{"tile_id": f"city/r{i}_c0", "caption": "Roads."} for i in range(4)] + [
        {"tile_id": "photos/img02", "caption": "Ok."}
    ]
    result = cli("caption", tiles, "--import", _jsonl(tmp_path / "c.jsonl", records), "-o", tmp_path / "cap")
    assert result.exit_code == 3
    error, hint = _error_lines(result)
    assert "4 of 5 rows" in error and "'city/r0_c0'" in error
    assert "tile_id 'city/r0_c0'" in hint and "'photos/img" in hint and "--no-tiles" in hint
    assert not (tmp_path / "cap").exists()


def test_no_tiles_keeps_the_files_ids(tmp_path, cli):
    path = _jsonl(
        tmp_path / "beijing.jsonl",
        [
            {"image": "Beijing/16_1_2_s.jpg", "caption": "Roads."},
            {"tile_id": "x/y", "caption": "A park.", "model": "m"},
        ],
    )
    result = cli("caption", "--import", path, "--no-tiles", "-o", tmp_path / "cap")
    assert result.exit_code == 0, result.stderr
    assert [(r["tile_id"], r["model"], r["image_sha256"]) for r in _rows(tmp_path / "cap")] == [
        ("Beijing/16_1_2_s", "beijing", None),
        ("x/y", "m", None),
    ]
    manifest = _manifest(tmp_path / "cap")
    assert [i["stage"] for i in manifest["inputs"]] == ["import"] and "tiles_without_captions" not in manifest["counts"]


def test_no_tiles_and_a_tiles_argument_are_exclusive(tiles, tmp_path, cli):
    path = _jsonl(tmp_path / "c.jsonl", [{"image": "img02.png", "caption": "x"}])
    result = cli("caption", tiles, "--import", path, "--no-tiles", "-o", tmp_path / "cap")
    assert result.exit_code == 2 and "exclusive" in _error_lines(result)[0]


def test_json_list_and_tsv(tiles, tmp_path):
    listed = tmp_path / "a.json"
    listed.write_text(
        json.dumps([{"image": "img02.png", "caption": "A road."}, {"image": "img03.jpg", "caption": "A park."}])
    )
    tsv = tmp_path / "b.tsv"
    tsv.write_text("image\tcaption\nimg02\tHouses, and a road.\n")
    result = caption(CaptionConfig(tiles=tiles, out=tmp_path / "cap", imports=(listed, tsv)))
    assert sorted((r["tile_id"], r["model"], r["caption"]) for r in _rows(result.out)) == [
        ("photos/img02", "a", "A road."),
        ("photos/img02", "b", "Houses, and a road."),
        ("photos/img03", "a", "A park."),
    ]


def test_missing_tiles_hint_at_no_tiles(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _jsonl(tmp_path / "c.jsonl", [{"image": "a.png", "caption": "x"}])
    result = cli("caption", "--import", path, "-o", "cap")
    assert result.exit_code == 3
    error, hint = _error_lines(result)
    assert "tiles artifact not found" in error and "--no-tiles" in hint


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--models", "llava"], "--import and --models are exclusive"),
        (["--host", "http://127.0.0.1:1"], "--import and --host are exclusive"),
    ],
)
def test_import_is_exclusive_with_model_options(tiles, tmp_path, cli, extra, needle):
    path = _jsonl(tmp_path / "c.jsonl", [{"image": "img02.png", "caption": "x"}])
    result = cli("caption", tiles, "--import", path, *extra, "-o", tmp_path / "cap")
    assert result.exit_code == 2
    assert needle in _error_lines(result)[0]


def test_import_flags_without_import(tiles, tmp_path, cli):
    for flag in ("--trusted", "--no-tiles"):
        result = cli("caption", tiles, flag, "-o", tmp_path / "cap")
        assert result.exit_code == 2 and f"{flag} goes with --import" in _error_lines(result)[0]
    with pytest.raises(UsageProblem, match="--trusted"):
        caption(CaptionConfig(tiles=tiles, out=tmp_path / "cap", trusted=True))


@pytest.mark.parametrize(
    "name, text, needle",
    [
        ("c.jsonl", '{"image": "img02.png", "text": "x"}\n', "no caption column"),
        ("c.jsonl", '{"image": "img02.png", "caption": "x"}\n{oops\n', "line 2: not valid JSON"),
        ("c.jsonl", '["img02.png", "x"]\n', "line 1: a JSON list, not an object"),
        ("c.csv", "file,caption\nimg02.png,x\n", "neither a tile_id nor an image column"),
        ("c.txt", "img02.png x\n", "not a .jsonl, .csv"),
        ("c.jsonl", "\n", "holds no captions"),
    ],
)
def test_bad_files_are_input_errors(tiles, tmp_path, cli, name, text, needle):
    path = tmp_path / name
    path.write_text(text)
    result = cli("caption", tiles, "--import", path, "-o", tmp_path / "cap")
    assert result.exit_code == 3
    assert needle in _error_lines(result)[0]


def test_missing_file(tiles, tmp_path, cli):
    result = cli("caption", tiles, "--import", tmp_path / "none.jsonl", "-o", tmp_path / "cap")
    assert result.exit_code == 3 and "import file not found" in _error_lines(result)[0]


def test_caption_column_typo_is_suggested(tiles, tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", [{"image": "img02.png", "captions": "x"}])
    with pytest.raises(InputError, match="did you mean 'captions'"):
        caption(CaptionConfig(tiles=tiles, out=tmp_path / "cap", imports=(path,)))


def test_rerun_is_a_no_op_and_other_captions_need_overwrite(tiles, tmp_path, cli):
    first = _jsonl(tmp_path / "a.jsonl", [{"image": "img02.png", "caption": "x"}])
    assert cli("caption", tiles, "--import", first, "-o", tmp_path / "cap").exit_code == 0
    again = cli("caption", tiles, "--import", first, "-o", tmp_path / "cap")
    assert again.exit_code == 0 and "nothing to do" in again.stderr
    other = _jsonl(tmp_path / "b.jsonl", [{"image": "img03.png", "caption": "y"}])
    refused = cli("caption", tiles, "--import", other, "-o", tmp_path / "cap")
    assert refused.exit_code == 1 and "--overwrite" in _error_lines(refused)[1]
    assert cli("caption", tiles, "--import", other, "-o", tmp_path / "cap", "--overwrite").exit_code == 0
    assert [r["caption"] for r in _rows(tmp_path / "cap")] == ["y"]
    with pytest.raises(OutputExistsError):  # trusted or not is another artifact too
        caption(CaptionConfig(tiles=tiles, out=tmp_path / "cap", imports=(other,), trusted=True))


def test_the_output_is_locked_while_written(tiles, tmp_path):
    path = _jsonl(tmp_path / "a.jsonl", [{"image": "img02.png", "caption": "x"}])
    with artifacts.output_lock(tmp_path / "cap"):
        with pytest.raises(OutputLocked):
            caption(CaptionConfig(tiles=tiles, out=tmp_path / "cap", imports=(path,)))


def test_imported_captions_read_like_model_captions(tiles, tmp_path):
    """What `fuse` reads of a captions artifact: tile_id -> model -> caption, every row a candidate."""
    records = [{"image": "img02.png", "caption": f"A road number {k}."} for k in range(5)]
    out = caption(
        CaptionConfig(tiles=tiles, out=tmp_path / "cap", imports=(_jsonl(tmp_path / "ucm.jsonl", records),))
    ).out
    ds, _ = artifacts.read_dataset(out, "captions")
    by_tile = {}
    for row in ds.select_columns(["tile_id", "model", "caption", "error"]).to_list():
        assert row["error"] is None
        by_tile.setdefault(row["tile_id"], {})[row["model"]] = row["caption"]
    assert by_tile == {"photos/img02": {f"ucm#{k + 1}": f"A road number {k}." for k in range(5)}}
