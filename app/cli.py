"""`latentqa`: run the pipeline, serve the local endpoint, trace lineage.

  latentqa run [--config FILE] [--set section.field=value ...]
  latentqa serve [--model NAME] [--port N]
  latentqa lineage PATH|FINGERPRINT [--root DIR]
  latentqa steer [--config FILE] [--set steer.field=value ...]
  latentqa sweep [--config FILE] [--set sweep.field=value ...]
  latentqa read --decoder DIR --prompt TEXT [--system TEXT] [--reply TEXT] --question Q [--question Q ...]
  latentqa import-latentqa [--source DIR] [--out DIR]
  latentqa validation-set [--config FILE] [--n N] [--out DIR]
  latentqa datasets [--root DIR]
  latentqa verify [--root DIR]
  latentqa gc --keep N [--root DIR] [--dry-run]
  latentqa up [--port N] | latentqa down      (make serve / make stop)
  latentqa prepare-model [--model NAME]
  latentqa export dataset [--root DIR] [--name NAME] [--version V] --out DIR [--push REPO_ID]
  latentqa export decoder DIR --out DIR [--push REPO_ID]
  latentqa ui [--root DIR] [--port N]      (make ui)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

DEFAULT_CONFIG = Path("configs/demo.yaml")

# Prefect settings for runs started outside the repository root (where prefect.toml is not read).
_PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
}


def _apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`--set section.field=value` (or `--set name=value` for the run's top-level name), each value read as YAML;
    a malformed one is a ConfigError naming the override."""
    from latentqa.config import TOP_LEVEL, ConfigError, RunConfig, YAMLValueError, yaml_value

    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, field = key.partition(".")
        if not sep or not section or (dot and not field) or (not dot and section not in TOP_LEVEL):
            raise ConfigError(f"--set {item!r}: expected section.field=value (or "
                              f"{' / '.join(f'{k}=value' for k in TOP_LEVEL)})")
        if dot and section in TOP_LEVEL:
            raise ConfigError(f"--set {item!r}: {section} is a value, not a section: write --set {section}=...")
        if dot and section not in RunConfig.model_fields:
            raise ConfigError(f"--set {item!r}: no config section {section!r} (sections: "
                              f"{', '.join(k for k in RunConfig.model_fields if k not in TOP_LEVEL)})")
        try:
            parsed = yaml_value(value)
        except YAMLValueError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({err})") from None
        if not dot:
            raw[section] = parsed
            continue
        if raw.get(section) is None:
            raw[section] = {}
        if not isinstance(raw[section], dict):
            raise ConfigError(f"--set {item!r}: section {section} of the config file is not a mapping")
        raw[section][field] = parsed
    return raw


def load_run_config(path: Path | None, overrides: list[str]):
    from latentqa.config import parse_config, raw_config

    path = path or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    if path is None:  # outside the repository with no --config: say so, the defaults are not configs/demo.yaml's
        print(f"config: none given and no {DEFAULT_CONFIG} here: running the built-in defaults "
              "(latentqa/config.py); pass --config FILE", file=sys.stderr)
    raw = raw_config(path) if path else {}  # its relative paths resolved before any override
    return parse_config(_apply_overrides(raw, overrides), source=str(path or "defaults"))


def check_store(root: Path) -> None:
    """Every finished stage of the store sound as a cache hit would find it (sizes; hashes of the small files;
    Parquet footers): a damaged one stops the run before Prefect and the writer lock, naming it."""
    from latentqa.config import ConfigError
    from storage.store import Store

    if root.is_dir() and (problems := Store(root).damaged()):
        raise ConfigError(f"storage.root {root} holds {len(problems)} damaged stage director"
                          f"{'y' if len(problems) == 1 else 'ies'} (`latentqa verify --root {root}` checks every "
                          "file's sha256):\n  " + "\n  ".join(problems))


def cmd_verify(args) -> int:
    """Every finished stage directory of the store against its manifest's sha256 sums."""
    from storage.store import Store

    store = Store(args.root)
    if not store.root.is_dir():
        print(f"verify: {store.root} is not a store (no such folder)", file=sys.stderr)
        return 2
    problems = store.damaged(full=True)
    n = len(store.manifests()) if not problems else None
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print(f"verify: {len(problems)} damaged stage directories in {store.root}", file=sys.stderr)
        return 2
    print(f"verify: {n} finished stage directories in {store.root}, every file as its manifest records")
    return 0


def _run_flow(args, flow_name: str, check: str = "check_run"):
    """Load the config and check it with `check` of latentqa/preflight.py, then run a flow of flows/ on it:
    (config, final state) or an exit code."""
    from latentqa import preflight
    from latentqa.config import ConfigError

    try:  # before Prefect starts: a bad config is an error message and exit code 2, never a failed flow run
        cfg = load_run_config(args.config, args.set)
        getattr(preflight, check)(cfg)
        check_store(Path(cfg.storage.root))
    except ConfigError as err:
        print(err, file=sys.stderr)
        return None, 2
    for key, value in _PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    _report_to_local_server()
    import importlib  # Prefect is imported only by the commands that run flows

    module, fn = flow_name.split(":")
    state = getattr(importlib.import_module(module), fn)(cfg, return_state=True)
    if not state.is_completed():
        print(f"{fn} {state.type.value}: {state.message}", file=sys.stderr)
        return None, 1
    return cfg, state


def cmd_run(args) -> int:
    cfg, state = _run_flow(args, "flows.pipeline:pipeline")
    if cfg is None:
        return state
    print_summary(cfg.storage.root, state.result())
    return 0


def _report_to_local_server() -> None:
    """With `make serve` running (and no PREFECT_API_URL of the user's), runs show up in that server's UI."""
    from app.operate import running

    if not os.environ.get("PREFECT_API_URL") and (services := running()):
        os.environ.update(PREFECT_API_URL=services.api_url, PREFECT_HOME=services.home)
        print(f"reporting to the local Prefect server: {services.ui_url}")


def cmd_steer(args) -> int:
    cfg, state = _run_flow(args, "flows.steer:steer_target")
    if cfg is None:
        return state
    print((Path(cfg.storage.root) / state.result().dir / "report.md").read_text())
    return 0


def cmd_sweep(args) -> int:
    cfg, state = _run_flow(args, "flows.sweep:scaling_sweep", check="check_sweep")
    if cfg is None:
        return state
    final = state.result()
    print((Path(cfg.storage.root) / final.dir / "report.md").read_text())
    print(f"plot: {(Path(cfg.storage.root) / final.dir / 'scaling.png').resolve()}")
    return 0


def print_summary(root: Path, final) -> None:
    from storage.catalog import lineage
    from storage.store import Store

    store = Store(root)
    print("\nArtifacts (stage, fingerprint, directory, time):")
    for row in sorted(lineage(store, final.fingerprint), key=lambda r: str(r["created_at"])):
        manifest = store.finished(row["stage"], row["fingerprint"])
        print(f"  {row['stage']:<11} {row['fingerprint'][:12]}  {store.root / row['dir']}  {manifest.elapsed_s:.1f}s")
    print(f"\nReading evaluation ({store.root / final.dir / 'report.md'}, with n and 95% intervals): primary "
          "score per condition; 'reads' when the decoder's interval lies above every control's")
    from latentqa.evals.harness import GENERATIVE, PRIMARY

    verdicts = [(PRIMARY, final.summary.get("reads", {})), (GENERATIVE, final.summary.get("reads_generative", {}))]
    for task, conditions in final.summary["scores"].items():
        for metric_of, reads in verdicts:
            if task not in metric_of:
                continue
            metric = metric_of[task]
            cells = "  ".join(f"{c} {m[metric]:.3f}" for c, m in conditions.items() if metric in m)
            print(f"  {task:<19} {metric:<11} {cells}  reads: {'yes' if reads.get(task) else 'no'}")


def _store_root(ref: str, root: Path | None) -> Path:
    """--root if given; else the store a path lies in (the parent of <stage>/<fp12>/); else runs/demo."""
    if root is not None:
        return root
    path = Path(ref).resolve()
    for candidate in [path, *path.parents]:
        if (candidate / "manifest.json").is_file() and not candidate.name.endswith(".partial"):
            return candidate.parent.parent
    return Path("runs/demo")


def _ui_url() -> str | None:
    """The Prefect UI of the configured API (PREFECT_API_URL, or make serve's server), for flow-run links."""
    from app.operate import running

    if os.environ.get("PREFECT_API_URL"):
        from prefect.settings import get_current_settings

        return get_current_settings().ui_url
    services = running()
    return services.ui_url if services else None


def cmd_lineage(args) -> int:
    from storage.catalog import lineage
    from storage.store import Store, StoreError

    store = Store(_store_root(args.ref, args.root))
    try:
        rows = lineage(store, args.ref)
        for row in rows:  # a directory damaged since it was written is not lineage to build on
            store.finished(row["stage"], row["fingerprint"])
    except (LookupError, StoreError) as err:
        print(err, file=sys.stderr)
        return 2
    ui = _ui_url()
    for row in rows:
        row["flow_run_url"] = f"{ui}/runs/flow-run/{row['flow_run_id']}" if ui and row["flow_run_id"] else None
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    print(f"store {store.root}")
    for row in rows:
        run = f"  flow run {row['flow_run_id']}" if row["flow_run_id"] else "  (made outside Prefect)"
        link = f"  {row['flow_run_url']}" if row["flow_run_url"] else ""
        print(f"{'  ' * row['depth']}{row['stage']:<11} {row['fingerprint'][:12]}  {row['dir']}  {row['created_at']}"
              f"{run}{link}")
    return 0


def cmd_read(args) -> int:
    from latentqa.reader import Reader, ReaderError

    problems = [f"{flag} is empty: {what}" for flag, value, what in (
        ("--prompt", args.prompt, "give the user message the target reads"),
        *(("--question", q, "every question needs words") for q in args.question)) if not value.strip()]
    if args.max_new_tokens < 1:
        problems.append(f"--max-new-tokens {args.max_new_tokens}: at least 1 token must be generated")
    try:
        if problems:
            raise ReaderError("; ".join(problems))
        reader = Reader(args.decoder, args.model)
        replies = reader.ask(args.question, args.prompt, args.system, args.reply, args.max_new_tokens, args.decoding)
    except (FileNotFoundError, ReaderError) as err:
        print(f"read: {err}", file=sys.stderr)
        return 2
    for question, reply in zip(args.question, replies):
        print(f"Q: {question}\nA: {reply}\n")
    return 0


def cmd_import(args) -> int:
    from latentqa.release import ReleaseError, behaviour_files, read_release, release_dataset
    from storage.imports import write_release

    try:  # everything is read and checked before anything is written
        release = read_release(args.source)
        dataset = release_dataset(args.source, behaviour_files(args.source), ["data/eval/qa.json"])
    except ReleaseError as err:
        print(f"import-latentqa: {err}", file=sys.stderr)
        return 2
    counts = write_release(release, dataset, args.source, args.out)
    print(f"imported into {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"  dataset:         {args.out}/dataset/{{controls,dialogs,qa}}.parquet ({dataset.counts['n_labels']} labels; "
          "train on it with a config's `release` section, e.g. configs/release.yaml)")
    print(f"  hidden personas: --set evaluate.hidden_persona_file={args.out}/hidden_persona.parquet")
    print(f"  catalog:         --set 'catalog.paths=[{args.out}/catalog/persona.yaml]' --set catalog.builtin=false")
    print(f"  steering:        --set steer.control={args.out}/steering/<name>.yaml")
    return 0


def cmd_validation_set(args) -> int:
    """Hidden personas and goals of the release's training files that the config's decoder never trained on."""
    from latentqa.config import ConfigError
    from latentqa.release import ReleaseError, validation_prompts
    from storage.imports import PERSONA_TABLE
    from storage.parquet import write_table

    try:
        cfg = load_run_config(args.config, args.set)
        if cfg.release is None:
            raise ConfigError(f"{args.config}: no `release` section: validation prompts are the release's "
                              "training-file labels its max_labels sample left out")
        prompts = validation_prompts(cfg.release.source, [(f.path, f.heldout) for f in cfg.release.files],
                                     cfg.release.max_labels, cfg.release.seed, args.n)
    except (ConfigError, ReleaseError) as err:
        print(f"validation-set: {err}", file=sys.stderr)
        return 2
    if not prompts:
        print(f"validation-set: {args.config}: its max_labels sample leaves no training-file label out",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for family, rows in sorted(prompts.items()):
        path = args.out / f"validation_{family}.parquet"
        write_table(path, rows, PERSONA_TABLE)
        print(f"{len(rows)} {family}s never trained on: --set evaluate.hidden_{family}_file={path}")
    return 0


def cmd_datasets(args) -> int:
    from storage import datasets
    from storage.store import Store

    store = Store(args.root)
    names = datasets.names(store)
    if not names:
        print(f"no dataset versions in {store.root}")
    for name in names:
        latest = datasets.resolve_version(store, name)["version"]
        print(f"{name}")
        for rec in datasets.versions(store, name):
            mark = "  <- latest" if rec["version"] == latest else ""
            print(f"  {rec['version'][:12]}  {rec['created_at']}  flow run {rec.get('flow_run_id')}{mark}")
    return 0


def cmd_gc(args) -> int:
    from storage.datasets import gc
    from storage.store import Store

    try:
        plan = gc(Store(args.root), args.keep, dry_run=args.dry_run)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    verb = "would remove" if args.dry_run else "removed"
    print(f"kept {len(plan.kept_versions)} versions: {', '.join(plan.kept_versions) or '-'}")
    if plan.leased_versions:
        print(f"in use by a running flow, kept this time: {', '.join(plan.leased_versions)}")
    print(f"{verb} {len(plan.removed_versions)} versions: {', '.join(plan.removed_versions) or '-'}")
    for d in plan.removed_dirs:
        print(f"  {verb} {d}")
    return 0


def cmd_up(args) -> int:
    from app.operate import up

    up(args.home, args.port)
    return 0


def cmd_down(args) -> int:
    from app.operate import down

    down(args.home)
    return 0


def cmd_serve(args) -> int:
    from latentqa.server import serve

    serve(args.model, args.port, args.max_batch, args.host)
    return 0


def cmd_prepare(args) -> int:
    from latentqa.models import resolve_model

    print(resolve_model(args.model))
    return 0


def cmd_export(args) -> int:
    from app.export import PushError, export_dataset, export_decoder, push
    from storage.store import StoreError

    try:
        if args.what == "dataset":
            rows = export_dataset(args.root, args.name, args.version, args.out, args.license)
            print(f"exported dataset {args.name} to {args.out}: " + ", ".join(f"{s} {n} rows" for s, n in rows.items()))
        else:
            names = export_decoder(args.decoder, args.out, args.license)
            print(f"exported decoder {args.decoder} to {args.out}: {', '.join(names)}")
        if args.push:
            print(f"pushed: {push(args.out, args.push, 'dataset' if args.what == 'dataset' else 'model')}")
    except (StoreError, LookupError, FileNotFoundError, PushError) as err:  # KeyError is a LookupError
        print(f"export: {err}", file=sys.stderr)
        return 2
    return 0


def cmd_ui(args) -> int:
    from app.ui import launch

    if not Path(args.root).is_dir():
        print(f"ui: no store at {args.root} (run `make run` first, or pass --root)", file=sys.stderr)
        return 2
    launch(args.root, args.port)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="latentqa", description="LatentQA as a cached, resumable Prefect pipeline.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole pipeline (cached stages are skipped)")
    run.add_argument("--config", type=Path, help=f"YAML run config (default: {DEFAULT_CONFIG} when present)")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="override a field")
    run.set_defaults(fn=cmd_run)
    lin = sub.add_parser("lineage", help="print the upstream chain of a stage directory, file or fingerprint")
    lin.add_argument("ref")
    lin.add_argument("--root", type=Path, help="the store (default: the one PATH lies in, else runs/demo)")
    lin.add_argument("--json", action="store_true")
    lin.set_defaults(fn=cmd_lineage)
    st = sub.add_parser("steer", help="steer the target through the trained decoder (the config's steer section)")
    st.add_argument("--config", type=Path, help=f"YAML run config (default: {DEFAULT_CONFIG} when present)")
    st.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="override a field")
    st.set_defaults(fn=cmd_steer)
    swp = sub.add_parser("sweep", help="the scaling sweep: a decoder per model and share of the training data "
                         "(the config's sweep section), one table and plot")
    swp.add_argument("--config", type=Path, help=f"YAML run config (default: {DEFAULT_CONFIG} when present)")
    swp.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="override a field")
    swp.set_defaults(fn=cmd_sweep)
    rd = sub.add_parser("read", help="ask a trained decoder about the target's activations on a dialog")
    rd.add_argument("--decoder", type=Path, required=True, help="a train/<fp12> directory of a store")
    rd.add_argument("--prompt", required=True, help="the user message the target reads")
    rd.add_argument("--system", help="a system prompt (the control): masked, the decoder reads what follows")
    rd.add_argument("--reply", help="an assistant reply the target also reads")
    rd.add_argument("--question", action="append", required=True)
    rd.add_argument("--model", help="the target/decoder base model (default: the one the decoder was trained on)")
    rd.add_argument("--max-new-tokens", type=int, default=48)
    rd.add_argument("--decoding", choices=["greedy", "contrastive", "rerank"], default="greedy",
                    help="how the answer is written (evaluate.decoding)")
    rd.set_defaults(fn=cmd_read)
    imp = sub.add_parser("import-latentqa", help="the LatentQA release in this project's formats: eval data, "
                         "steering controls and a trainable dataset")
    imp.add_argument("--source", type=Path, default=Path("../shared/latentqa_data"))
    imp.add_argument("--out", type=Path, default=Path("runs/latentqa-release"))
    imp.set_defaults(fn=cmd_import)
    val = sub.add_parser("validation-set", help="hidden personas and goals of a release config's training files "
                         "that its decoder never trained on: choose evaluate settings on these, not on the test set")
    val.add_argument("--config", type=Path, default=Path("configs/release.yaml"))
    val.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    val.add_argument("--n", type=int, default=100, help="prompts per family (a seeded sample)")
    val.add_argument("--out", type=Path, default=Path("runs/validation"))
    val.set_defaults(fn=cmd_validation_set)
    ver = sub.add_parser("verify", help="check every finished stage directory of a store against its manifest's "
                         "sha256 sums (a cache hit checks sizes, small files' hashes and Parquet footers)")
    ver.add_argument("--root", type=Path, default=Path("runs/demo"))
    ver.set_defaults(fn=cmd_verify)
    dsets = sub.add_parser("datasets", help="list every dataset's versions and its latest one")
    dsets.add_argument("--root", type=Path, default=Path("runs/demo"))
    dsets.set_defaults(fn=cmd_datasets)
    gcp = sub.add_parser("gc", help="remove all but the newest N versions of each dataset and what only they reach")
    gcp.add_argument("--keep", type=int, required=True)
    gcp.add_argument("--root", type=Path, default=Path("runs/demo"))
    gcp.add_argument("--dry-run", action="store_true")
    gcp.set_defaults(fn=cmd_gc)
    from app.operate import DEFAULT_HOME

    upp = sub.add_parser("up", help="local Prefect server + work pool + deployments + worker (make serve)")
    upp.add_argument("--port", type=int, default=4200)
    upp.add_argument("--home", type=Path, default=DEFAULT_HOME, help="PREFECT_HOME of the local server")
    upp.set_defaults(fn=cmd_up)
    dwn = sub.add_parser("down", help="stop what `latentqa up` started (make stop)")
    dwn.add_argument("--home", type=Path, default=DEFAULT_HOME)
    dwn.set_defaults(fn=cmd_down)
    srv = sub.add_parser("serve", help="serve a model as an OpenAI-compatible endpoint on 127.0.0.1")
    srv.add_argument("--model", default="smollm2-135m-instruct")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--max-batch", type=int, default=16)
    srv.set_defaults(fn=cmd_serve)
    prep = sub.add_parser("prepare-model", help="convert/locate a model and print the folder it loads from")
    prep.add_argument("--model", default="smollm2-135m-instruct")
    prep.set_defaults(fn=cmd_prepare)
    exp = sub.add_parser("export", help="a dataset version or a trained decoder as a Hugging Face folder (and push)")
    what = exp.add_subparsers(dest="what", required=True)
    exd = what.add_parser("dataset", help="train and eval splits for datasets.load_dataset, with a dataset card")
    exd.add_argument("--root", type=Path, default=Path("runs/demo"), help="the store")
    exd.add_argument("--name", default="demo", help="the dataset (latentqa datasets lists them)")
    exd.add_argument("--version", help="a version's fingerprint prefix (default: the latest)")
    exm = what.add_parser("decoder", help="a peft adapter folder with decoder.json and a model card")
    exm.add_argument("decoder", type=Path, help="a train/<fp12> directory of a store")
    for p in (exd, exm):
        p.add_argument("--out", type=Path, required=True, help="the folder to write (replaced whole)")
        p.add_argument("--license", default="unknown",
                       help="the card's licence field: a Hub licence id for what the data or base model allow")
        p.add_argument("--push", metavar="REPO_ID", help="upload to this Hub repo; needs HF_TOKEN in the environment")
        p.set_defaults(fn=cmd_export)
    ui = sub.add_parser("ui", help="the reading playground on 127.0.0.1 (make ui)")
    ui.add_argument("--root", type=Path, default=Path("runs/demo"), help="the store whose decoders it offers")
    ui.add_argument("--port", type=int, default=7860)
    ui.set_defaults(fn=cmd_ui)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
