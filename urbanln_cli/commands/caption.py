"""``urbanln caption``: caption every tile with several local VLMs, through Ollama or transformers (``hf:``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from urbanln_cli.commands import _common


def caption(
    ctx: typer.Context,
    tiles: Annotated[Path, typer.Argument(help="Tiles dataset from `urbanln tile`.")] = Path("tiles"),
    models: Annotated[
        str,
        typer.Option(
            help="Comma-separated aliases or Ollama tags (see --list-models), hf:<model folder or Hugging Face id> "
            "(transformers, in this process), or the simulated panel: "
            "sim:precise,sim:verbose,sim:hallucinating,sim:generic."
        ),
    ] = "llava,qwen-vl",
    out: Annotated[Path, typer.Option("--out", "-o", help="Output captions dataset folder.")] = Path("captions"),
    host: Annotated[
        list[str] | None,
        typer.Option(
            help="Ollama server URL; repeat to spread the load over several. \\[default: $OLLAMA_HOST or http://127.0.0.1:11434]",
            envvar="OLLAMA_HOST",
            show_default=False,
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(help="Requests in flight per host (match the server's OLLAMA_NUM_PARALLEL).")
    ] = 4,
    timeout: Annotated[float, typer.Option(help="Seconds one request may take.")] = 300.0,
    retries: Annotated[int, typer.Option(help="Retries for timeouts, dropped connections, 429 and 5xx.")] = 4,
    content_retries: Annotated[
        int, typer.Option(help="Retries (with a new seed) for empty output, refusals and runaway repetition.")
    ] = 2,
    prompt: Annotated[
        Path | None,
        typer.Option(
            help="Custom prompt file ({gsd} and {visibility} are filled in). \\[default: the shipped urban-v1 prompt]",
            show_default=False,
        ),
    ] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    num_predict: Annotated[int, typer.Option(help="Most tokens per caption.")] = 512,
    num_ctx: Annotated[int, typer.Option(help="Context window in tokens (the image takes several hundred).")] = 4096,
    keep_alive: Annotated[
        str, typer.Option(help="How long the server keeps the model loaded after a request.")
    ] = "30m",
    image_size: Annotated[
        int, typer.Option(help="Longest image side sent to the model; larger tiles are shrunk.")
    ] = 672,
    shard: Annotated[
        str, typer.Option(help="Caption part i of n (0-based), split by a stable hash of tile_id, e.g. 0/4.")
    ] = "0/1",
    stream: Annotated[bool, typer.Option("--stream", help="Stream tokens (more client CPU per request).")] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Caption again the rows that failed in earlier runs.")
    ] = False,
    limit: Annotated[
        int | None, typer.Option(help="Caption only the first N tiles (to try a prompt).", show_default=False)
    ] = None,
    scene: Annotated[
        Path | None,
        typer.Option(
            help="scene.json of a synthetic city, for sim: models. \\[default: the one beside the tiles' source]",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(help="hf: models: tiles per generate call (halved on CUDA out-of-memory).")
    ] = 8,
    device: Annotated[
        str,
        typer.Option(help="hf: models: auto (this torchrun rank's GPU, else cuda:0, else cpu), cpu, cuda or cuda:N."),
    ] = "auto",
    list_models: Annotated[
        bool, typer.Option("--list-models", help="Show the model aliases and what each host has pulled, then exit.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output made with other models, prompt or options.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary on stdout instead of the output path.")
    ] = False,
    imports: Annotated[
        list[Path] | None,
        typer.Option(
            "--import",
            help="Import captions made elsewhere instead of captioning (no server): a .jsonl, .csv or .parquet "
            "file with a caption column, a tile_id or image column and an optional model column (default: the "
            "file's stem); repeatable.",
            show_default=False,
        ),
    ] = None,
    trusted: Annotated[
        bool,
        typer.Option(
            "--trusted",
            help="With --import: the captions are human-checked (fuse cleans them without support or visibility "
            "filtering).",
        ),
    ] = False,
    no_tiles: Annotated[
        bool,
        typer.Option(
            "--no-tiles",
            help="With --import: keep the file's ids (tile_id, or image without extension) instead of matching "
            "them to TILES, for tiles you do not have; fuse then needs --gsd.",
        ),
    ] = False,
) -> None:
    """Caption every tile with several VLMs through Ollama, or import captions made elsewhere; one row per (tile, model).

    Models run one at a time across all tiles (no model swapping on the GPU),
    spread over every --host. Finished captions go to a journal in <out>.partial/
    first, so Ctrl-C, kill -9 or a dead server lose at most the requests in flight:
    run the same command again to resume.

    With --import FILE, captions made elsewhere become the same captions artifact,
    matched to the tiles by tile_id or image name; several rows of a tile are
    several candidates.
    """  # noqa: E501 (the help text's first line, kept as Typer shows it)
    if imports or trusted or no_tiles:
        _import(ctx, tiles, imports or [], out, trusted, no_tiles, overwrite, as_json)
        return
    from urbanln_cli.captioners import GenerationOptions
    from urbanln_cli.captioners.aliases import model_kind, resolve_models
    from urbanln_cli.captioners.ollama import DEFAULT_HOST
    from urbanln_cli.stages.caption import CaptionConfig
    from urbanln_cli.stages.caption import caption as run_caption

    hosts = tuple(host or [DEFAULT_HOST])
    tags = () if list_models else tuple(resolve_models(models))
    if list_models or any(model_kind(t) == "ollama" for t in tags):  # sim: and hf: models need no server
        _common.check_hosts(ctx, hosts)
    if list_models:
        _list_models(hosts, as_json)
        return
    shard_parts, out = _shard_and_out(ctx, shard, out)
    config = CaptionConfig(
        tiles=tiles,
        out=out,
        models=tags,
        hosts=hosts,
        concurrency=concurrency,
        timeout=timeout,
        retries=retries,
        content_retries=content_retries,
        prompt=prompt,
        options=GenerationOptions(temperature, seed, num_predict, num_ctx, keep_alive),
        image_size=image_size,
        shard=shard_parts,
        stream=stream,
        retry_failed=retry_failed,
        limit=limit,
        overwrite=overwrite,
        scene=scene,
        batch_size=batch_size,
        device=device,
    )
    with _common.progress_bar("captioning") as update:
        result = run_caption(config, progress=update, run=_common.run_info(ctx))
    if result.nothing_to_do:
        _common.summary(f"{result.out} is complete ({result.rows} rows): nothing to do")
    else:
        detail = _common.describe_counts(result.counts, skip=("captions",))
        _common.summary(
            f"wrote {result.rows} rows ({result.counts.get('captions', 0)} captions) to {result.out}; {detail}"
        )
        if result.counts.get("failed"):
            _common.warn("some rows failed; `--retry-failed` captions them again")
    _common.emit(
        {"out": str(result.out), "rows": result.rows, "counts": result.counts, "nothing_to_do": result.nothing_to_do}
        if as_json
        else result.out,
        as_json,
    )


# options of captioning with models, which --import does not take
_MODEL_OPTIONS = (
    "models",
    "host",
    "concurrency",
    "timeout",
    "retries",
    "content_retries",
    "prompt",
    "temperature",
    "seed",
    "num_predict",
    "num_ctx",
    "keep_alive",
    "image_size",
    "shard",
    "stream",
    "retry_failed",
    "limit",
    "scene",
    "list_models",
    "batch_size",
    "device",
)


def _import(
    ctx: typer.Context,
    tiles: Path,
    imports: list[Path],
    out: Path,
    trusted: bool,
    no_tiles: bool,
    overwrite: bool,
    as_json: bool,
) -> None:
    from urbanln_cli.errors import UsageProblem
    from urbanln_cli.stages.caption import CaptionConfig
    from urbanln_cli.stages.caption import caption as run_caption

    def given(name: str) -> bool:  # by name: typer and click each have a ParameterSource enum
        source = ctx.get_parameter_source(name)
        return source is not None and source.name == "COMMANDLINE"

    if not imports:
        flag = "--trusted" if trusted else "--no-tiles"
        raise UsageProblem(
            f"{flag} goes with --import", hint="e.g. urbanln caption tiles --import captions.jsonl " + flag
        )
    clash = next((name for name in _MODEL_OPTIONS if given(name)), None)
    if clash is not None:
        option = "--" + clash.replace("_", "-")
        raise UsageProblem(
            f"--import and {option} are exclusive: --import takes captions made elsewhere, with no model",
            hint=f"drop {option}, or caption with models in another run, into its own -o folder",
        )
    if no_tiles and given("tiles"):
        raise UsageProblem(
            "--no-tiles and a TILES argument are exclusive",
            hint="drop --no-tiles to match the captions to those tiles, or the TILES argument to keep the file's ids",
        )
    config = CaptionConfig(
        tiles=None if no_tiles else tiles, out=out, imports=tuple(imports), trusted=trusted, overwrite=overwrite
    )
    with _common.progress_bar("importing") as update:
        result = run_caption(config, progress=update, run=_common.run_info(ctx, config, drop=_MODEL_OPTIONS))
    for warning in result.warnings:
        _common.warn(warning)
    if result.nothing_to_do:
        _common.summary(f"{result.out} already holds these imported captions ({result.rows} rows): nothing to do")
    else:
        models = len(result.manifest.get("models", {}))
        tiles_n = result.counts.get("tiles_captioned", 0)
        _common.summary(
            f"imported {result.rows} captions ({models} model{'s' if models != 1 else ''}, {tiles_n} tiles"
            f"{', trusted' if trusted else ''}) to {result.out}"
        )
    _common.emit(
        {
            "out": str(result.out),
            "rows": result.rows,
            "counts": result.counts,
            "nothing_to_do": result.nothing_to_do,
            "imports": [i for i in result.manifest.get("inputs", []) if i.get("stage") == "import"],
        }
        if as_json
        else result.out,
        as_json,
    )


def _shard_and_out(ctx: typer.Context, shard: str, out: Path) -> tuple[tuple[int, int], Path]:
    """--shard, or under torchrun (WORLD_SIZE > 1, no --shard given) this rank's part, into ``<out>-<i>of<n>``.

    Every rank gets the same arguments, so each writes its own folder (and journal); fuse reads them all.
    """
    import os

    source = ctx.get_parameter_source("shard")
    given = source is not None and source.name != "DEFAULT"
    world = os.environ.get("WORLD_SIZE", "")
    if given or not world.isdigit() or int(world) <= 1:
        return _parse_shard(shard), out
    rank = int(os.environ.get("RANK", "0") or 0)
    part = (rank, int(world))
    _common.warn(f"torchrun rank {rank} of {world}: captioning shard {rank}/{world} into {out}-{rank}of{world}")
    return part, out.with_name(f"{out.name}-{rank}of{world}")


def _parse_shard(text: str) -> tuple[int, int]:
    from urbanln_cli.errors import UsageProblem

    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UsageProblem(
            f"--shard {text!r} is not i/n", hint="e.g. --shard 0/4 on the first of four machines"
        ) from None
    return i, n


def _list_models(hosts: tuple[str, ...], as_json: bool) -> None:
    import asyncio

    from urbanln_cli.captioners.aliases import ALIASES, HF_ALIASES
    from urbanln_cli.captioners.ollama import OllamaBackend

    async def pulled():
        backend = OllamaBackend(hosts, timeout=5.0)
        try:
            return await backend.pulled()
        finally:
            await backend.aclose()

    by_host = asyncio.run(pulled())
    if as_json:
        _common.emit({"aliases": ALIASES, "hosts": by_host, "hf_aliases": HF_ALIASES}, True)
        return
    lines = ["alias               tag                      " + "  ".join(by_host)]
    for alias, tag in ALIASES.items():  # a host that does not answer stopped the listing (exit 4) in pulled()
        marks = ["pulled" if tag in v else "-" for v in by_host.values()]
        lines.append(f"{alias:<19} {tag:<24} " + "  ".join(f"{m:<{len(h)}}" for m, h in zip(marks, by_host)))
    for host, value in by_host.items():
        others = [m for m in value if m not in ALIASES.values()]
        if others:
            lines.append(f"{host} also has: {', '.join(others)}")
    lines.append("hf: models (transformers, in this process; from a folder or the Hugging Face cache):")
    lines += [f"{alias:<19} {target}" for alias, target in HF_ALIASES.items()]
    typer.echo("\n".join(lines))


def register(app: typer.Typer) -> None:
    app.command("caption")(caption)
