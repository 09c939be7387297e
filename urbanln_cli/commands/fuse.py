"""``urbanln fuse``: clean, check and fuse several models' captions into one corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from urbanln_cli.commands import _common


def fuse(
    ctx: typer.Context,
    captions: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Captions datasets from `urbanln caption` (shards, or runs with other models). With --explain, a "
            "corpus works too. \\[default: captions]",
            show_default=False,
        ),
    ] = None,
    tiles: Annotated[
        Path, typer.Option(help="Tiles dataset, for each tile's ground sample distance (visibility step).")
    ] = Path("tiles"),
    gsd: Annotated[
        float | None,
        typer.Option(
            help="Metres per pixel of tiles without one: captions made elsewhere, with no tiles artifact (--tiles "
            "is then optional).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output corpus dataset folder.")] = Path("corpus"),
    lexicon: Annotated[
        Path | None,
        typer.Option(
            help="TOML or JSON file extending the urban lexicon: \\[concepts.NAME] terms, \\[visibility] NAME = "
            "max GSD, \\[attributes] words.",
            show_default=False,
        ),
    ] = None,
    clean: Annotated[
        bool,
        typer.Option(
            "--clean/--no-clean", help="Strip refusals, boilerplate, filler clauses, repeats; enforce length bounds."
        ),
    ] = True,
    visibility: Annotated[
        bool,
        typer.Option(
            "--visibility/--no-visibility", help="Drop claims about objects too small to see at the tile's GSD."
        ),
    ] = True,
    support: Annotated[
        bool,
        typer.Option(
            "--support/--no-support", help="Drop claims too few other models make (support is still recorded)."
        ),
    ] = True,
    consensus: Annotated[
        bool,
        typer.Option(
            "--consensus/--no-consensus",
            help="Choose the candidate that agrees most with the others (off: the one with most kept claims).",
        ),
    ] = True,
    filter_trusted: Annotated[
        bool,
        typer.Option(
            "--filter-trusted",
            help="Apply visibility, support and --check to captions imported with `caption --import --trusted` too "
            "(by default they are only cleaned).",
        ),
    ] = False,
    min_support: Annotated[
        float,
        typer.Option(
            help="Least share of the other models that must make a matching claim (0.3: one of three others)."
        ),
    ] = 0.3,
    soft_threshold: Annotated[
        float, typer.Option(help="Least character n-gram TF-IDF cosine for a soft match of claims outside the lexicon.")
    ] = 0.5,
    count_tolerance: Annotated[
        float, typer.Option(help="Counts agree when they differ by at most this share (or by 1).")
    ] = 0.25,
    min_words: Annotated[int, typer.Option(help="Shortest sentence kept, in words.")] = 2,
    max_words: Annotated[int, typer.Option(help="Longest sentence kept, in words.")] = 80,
    max_tokens: Annotated[
        int, typer.Option(help="Long caption limit in CLIP tokens (Long-CLIP: 248); cut at a sentence boundary.")
    ] = 248,
    short_tokens: Annotated[int, typer.Option(help="Short caption limit in CLIP tokens.")] = 77,
    tokenizer: Annotated[str, typer.Option(help="open_clip tokenizer that counts tokens.")] = "ViT-B-16",
    check: Annotated[
        str,
        typer.Option(
            help="Image check of disputed claims (too little support, or any claim of a single model): clip, vlm "
            "or none."
        ),
    ] = "none",
    check_model: Annotated[
        list[str] | None,
        typer.Option(
            help="--check vlm: checking models (aliases or tags, comma-separated or repeated); a claim goes to one "
            "that did not make it (a lone model checks its own). \\[default: the captions' models]",
            show_default=False,
        ),
    ] = None,
    clip_model: Annotated[
        Path | None,
        typer.Option(help="--check clip: a pretrain run folder. \\[default: runs/latest]", show_default=False),
    ] = None,
    clip_arch: Annotated[
        str | None,
        typer.Option(help="--check clip: open_clip architecture of --clip-pretrained.", show_default=False),
    ] = None,
    clip_pretrained: Annotated[
        str | None,
        typer.Option(
            help="--check clip: open_clip weights (a tag such as openai, a file, or local-dir:FOLDER) "
            "instead of a run.",
            show_default=False,
        ),
    ] = None,
    clip_margin: Annotated[
        float | None,
        typer.Option(
            help="--check clip: how far a claim must beat the contrast prompts to count as confirmed. \\[default: "
            "the checker's]",
            show_default=False,
        ),
    ] = None,
    refine: Annotated[
        str | None,
        typer.Option(
            help="Ollama vision model that captions the four quadrants and rewrites each candidate (structured "
            "output); the rewrite is checked again. sim:<persona> on a synthetic city.",
            show_default=False,
        ),
    ] = None,
    scene: Annotated[
        Path | None,
        typer.Option(
            help="sim: models in --check vlm or --refine: the synthetic city's scene.json. \\[default: the "
            "scene.json beside the raster the tiles were cut from]",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        list[str] | None,
        typer.Option(
            help="Ollama server URL for --check vlm and --refine; repeat for several. \\[default: $OLLAMA_HOST or http://127.0.0.1:11434]",
            envvar="OLLAMA_HOST",
            show_default=False,
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight per host.")] = 4,
    timeout: Annotated[float, typer.Option(help="Seconds one request may take.")] = 300.0,
    retries: Annotated[int, typer.Option(help="Retries for timeouts, dropped connections, 429 and 5xx.")] = 4,
    image_size: Annotated[int, typer.Option(help="Longest image side sent to a VLM; larger tiles are shrunk.")] = 672,
    seed: Annotated[int, typer.Option(help="Sampling seed of the VLM requests (temperature 0).")] = 0,
    explain: Annotated[
        str | None,
        typer.Option(
            help="Show how one tile is fused (from a corpus given as input, or computed for that tile) and exit.",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary (or the --explain record) on stdout.")
    ] = False,
) -> None:
    """Fuse several models' captions: clean them, split them into claims, drop claims
    too small to see, unsupported or contradicted by the other models, and choose a
    consensus caption.

    Nothing is rewritten: a dropped claim takes out the clause or phrase that says it,
    and the caption is one model's own sentences. Negations ("no cars") are claims of
    absence. Every dropped phrase is kept with its reason and step in the `dropped`
    column, and the manifest counts dropped_<reason>. A tile whose every candidate was
    emptied keeps its best cleaned candidate (`fallback`). The caption fits
    --max-tokens CLIP tokens; caption_short is its leading sentences (the one naming
    the main land use first) within --short-tokens.

    --check clip|vlm lets the image confirm disputed claims (a CLIP model, or a VLM
    asked yes/no through Ollama); --refine MODEL rewrites each candidate from its
    quadrant captions. On a synthetic city, sim:<persona> models answer both from
    the scene (--scene). Their answers are journaled in <out>.partial/, so a rerun
    after Ctrl-C or a server failure asks only what is missing.
    """
    from urbanln_cli.captioners.aliases import resolve_models
    from urbanln_cli.captioners.ollama import DEFAULT_HOST
    from urbanln_cli.stages.fuse import FuseConfig
    from urbanln_cli.stages.fuse import explain as run_explain
    from urbanln_cli.stages.fuse import fuse as run_fuse

    if check == "vlm" or refine is not None:  # the only steps that talk to Ollama
        _common.check_hosts(ctx, host or [DEFAULT_HOST])
    config = FuseConfig(
        captions=tuple(captions or [Path("captions")]),
        tiles=tiles,
        gsd=gsd,
        out=out,
        lexicon=lexicon,
        clean=clean,
        visibility=visibility,
        support=support,
        consensus=consensus,
        filter_trusted=filter_trusted,
        min_support=min_support,
        soft_threshold=soft_threshold,
        count_tolerance=count_tolerance,
        min_words=min_words,
        max_words=max_words,
        max_tokens=max_tokens,
        short_tokens=short_tokens,
        tokenizer=tokenizer,
        image_check=check,
        check_models=tuple(resolve_models(check_model)) if check_model else (),
        clip_model=clip_model,
        clip_arch=clip_arch,
        clip_pretrained=clip_pretrained,
        clip_margin=clip_margin,
        refine=_one_model(refine),
        scene=scene,
        hosts=tuple(host or [DEFAULT_HOST]),
        concurrency=concurrency,
        timeout=timeout,
        retries=retries,
        image_size=image_size,
        seed=seed,
        overwrite=overwrite,
    )
    if explain is not None:
        record = run_explain(config, explain)
        if as_json:
            _common.emit(record, True)
        else:
            typer.echo(render_explain(record))
        return
    with _common.progress_bar("fusing") as update:
        result = run_fuse(config, progress=update, run=_common.run_info(ctx))
    dropped = _common.describe_counts(result.counts, prefix="dropped_")
    mode = "; single model: support not checked" if result.counts["single_model"] else ""
    if "checked" in result.counts:
        mode += (
            f"; image check confirmed {result.counts.get('confirmed', 0)} of {result.counts['checked']} disputed claims"
        )
        if result.counts.get("check_errors"):
            mode += f" ({result.counts['check_errors']} got no answer and stay as support left them)"
    if config.refine:
        mode += (
            f"; {result.counts.get('refined', 0)} candidates rewritten by {config.refine}, "
            f"{result.counts.get('refine_not_used', 0)} kept their draft ({result.counts.get('refine_errors', 0)} "
            "requests failed)"
        )
    if result.counts.get("fallback_tiles"):
        mode += (
            f"; {result.counts['fallback_tiles']} tiles kept their best cleaned caption (every candidate was emptied)"
        )
    if result.counts.get("check_errors") or result.counts.get("refine_errors"):
        mode += f"; to ask again, rerun with --overwrite (the answers so far are reused from {result.out}.partial/)"
    _common.summary(
        f"wrote {result.rows} fused captions to {result.out}; {result.counts['failed_captions']} failed captions "
        f"skipped{mode}" + (f"; dropped {dropped}" if dropped else "")
    )
    if result.counts.get("not_in_tiles"):
        took = (
            f"they take --gsd {config.gsd}"
            if config.gsd is not None
            else "their GSD is unknown, so the visibility step could not drop claims too small to see"
        )
        n = result.counts["not_in_tiles"]
        _common.warn(
            f"{n} captioned tile{' is' if n == 1 else 's are'} not in {config.tiles}: {took}; "
            "pass with --tiles the tiles the captions were made from"
        )
    _common.emit(
        {"out": str(result.out), "rows": result.rows, "counts": result.counts} if as_json else result.out, as_json
    )


def render_explain(record: dict) -> str:
    """A human-readable account of one tile's fusion."""
    lines = [
        f"tile {record['tile_id']}  "
        f"({'from ' + record['source'] if record['source'] != 'computed' else 'computed now'})"
    ]
    if record.get("caption") is None:
        lines.append(f"  {record.get('note', 'no caption')}")
        lines += [f"  {d['model']} s{d['sentence']}: {d['reason']}: {d['text']}" for d in record.get("dropped") or []]
        return "\n".join(lines)
    gsd = record.get("gsd")
    lines.append(
        f"models: {record['n_models']}   gsd: {'unknown' if gsd is None else f'{gsd:.2f} m/px'}   chosen: "
        f"{record['model']}"
    )
    if record.get("fallback"):
        lines.append(
            "fallback: every candidate was emptied by the filters; the caption is the best cleaned candidate, "
            "unfiltered"
        )
    for name, text in sorted((record.get("inputs") or {}).items()):
        lines += [f"\ninput {name}:", f"  {text}"]
    if record.get("local_captions"):
        lines.append("\nquadrant captions (--refine):")
        lines += [
            f"  {where}: {text}"
            for where, text in zip(("top-left", "top-right", "bottom-left", "bottom-right"), record["local_captions"])
        ]
    lines.append("\ncandidates:")
    for c in record["candidates"]:
        score = "n/a" if c["score"] is None else f"{c['score']:.3f}"
        mark = "*" if c["model"] == record["model"] else " "
        how = (
            f"  refined by {c['refined_by']}"
            if c.get("refined_by")
            else (f"  not refined: {c['refine_error']}" if c.get("refine_error") else "")
        )
        how += "  trusted (cleaned only)" if c.get("trusted") else ""
        lines.append(f" {mark} {c['model']}  score {score}{how}\n    {c['caption']}")
    lines.append("\nkept claims (support = share of the other models that agree):")
    for c in record["claims"]:
        support = "n/a (single model)" if c["support"] is None else f"{c['support']:.2f}"
        notes = (" (the only land use named)" if c.get("uncontested") else "") + (
            f"  contradicted by {', '.join(c['contradicted_by'])}" if c.get("contradicted_by") else ""
        )
        lines.append(
            f"  {c['model']} s{c['sentence']}{_where(c)}: {c['text']}  [{c['concept'] or 'phrase'}]  support "
            f"{support}{notes}{_checked(c)}"
        )
    lines.append("\ndropped (reason: what, [step] and what went with it):")
    for d in record["dropped"] or []:
        lines.append(f"  {d['model']} s{d['sentence']}{_where(d)}: {d['reason']}: {d['text']}{_how(d)}{_checked(d)}")
    if not record["dropped"]:
        lines.append("  nothing")
    lines += [
        f"\ncaption ({record['tokens']} CLIP tokens{', cut' if record['cut'] else ''}):",
        f"  {record['caption']}",
    ]
    lines += [f"caption_short ({record['short_tokens']} CLIP tokens):", f"  {record['caption_short']}"]
    return "\n".join(lines)


def _one_model(name: str | None) -> str | None:
    from urbanln_cli.captioners.aliases import resolve_models
    from urbanln_cli.errors import UsageProblem

    if name is None:
        return None
    tags = resolve_models(name)
    if len(tags) != 1:
        raise UsageProblem(
            f"--refine takes one vision model, not {name!r}", hint="e.g. --refine qwen-vl, or sim:precise"
        )
    return tags[0]


def _how(item: dict) -> str:
    """The step that dropped it, the text that went, or the claim it went with."""
    out = f"  [{item['step']}]" if item.get("step") else ""
    cause = item.get("cause")
    if cause:
        out += f" with {cause['text']!r} ({cause['reason']})"
    elif item.get("removed") and item["removed"] != item["text"]:
        out += f" removed {item['removed']!r}"
    if item.get("kept_by_fallback"):
        out += "  (kept: fallback)"
    return out


def _where(item: dict) -> str:
    return " (rewrite)" if item.get("stage") == "refine" else ""


def _checked(item: dict) -> str:
    if "checked_by" not in item:
        return ""
    if item.get("check_score") is not None:  # clip: the score, and the view that scored best
        said = f"{item['check_score']:+.2f} on {item.get('check_answer') or 'the tile'}"
    else:
        said = item.get("check_answer") or item.get("check_error") or "?"
    return f"  {'confirmed' if item['confirmed'] else 'not confirmed'} by {item['checked_by']} ({said})"


def register(app: typer.Typer) -> None:
    app.command("fuse", no_args_is_help=False)(fuse)
