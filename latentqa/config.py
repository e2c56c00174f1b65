"""RunConfig: one validated, frozen pydantic tree for a pipeline run, loaded from YAML.

Each task receives only the sections it reads, so a fingerprint changes only when something that stage
depends on changes. Fields listed in a section's NON_SEMANTIC never enter a fingerprint (speed knobs,
devices, secrets' names); fields listed in its ADDED_LATER enter it only when set away from their default, so
adding an option does not invalidate every store made before it existed. Everything derivable from the model (its depth) is checked once, before any work,
by `check_against_model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_MODEL = "smollm2-135m-instruct"
Variant = Literal["system", "stimulus", "stimulus_completion", "control"]


def _wants_int(annotation) -> bool:
    """An annotation that takes ints and not booleans: int, int | None, list[int], int | Literal[...]."""
    if annotation is int:
        return True
    return any(_wants_int(a) for a in get_args(annotation)) and bool not in get_args(annotation)


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    NON_SEMANTIC: ClassVar[frozenset[str]] = frozenset()
    ADDED_LATER: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, raw):
        """YAML reads yes/no/true as booleans and pydantic would take them as 1/0: `read_layers: [yes]` must be
        an error, not layer 1."""
        if isinstance(raw, dict):
            for name, field in cls.model_fields.items():
                value = raw.get(name)
                values = value if isinstance(value, list) else [value]
                if _wants_int(field.annotation) and any(isinstance(v, bool) for v in values):
                    raise ValueError(f"{name}: expected a number, got the boolean {value!r} (YAML reads yes, no, "
                                     "true, false, on and off as booleans)")
        return raw


class ModelConfig(Section):
    """The target model; the decoder is the same weights plus a LoRA adapter."""

    NON_SEMANTIC: ClassVar[frozenset[str]] = frozenset({"device"})
    name: str = Field(DEFAULT_MODEL, description="embedded name, Hugging Face id, or a local directory")
    revision: str | None = Field(None, description="Hub revision (ignored for local and embedded models)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on CUDA, float32 on CPU")
    device: str = Field("auto", description="auto: cuda when present, else cpu")


class EndpointConfig(Section):
    """An OpenAI-compatible endpoint. No base_url: the pipeline serves `local_model` on 127.0.0.1 itself."""

    NON_SEMANTIC: ClassVar[frozenset[str]] = frozenset(
        {"base_url", "api_key_env", "timeout_s", "max_retries", "concurrency", "max_batch", "max_cost_usd",
         "price_prompt_per_mtok", "price_completion_per_mtok"})
    base_url: str | None = None
    model_id: str | None = Field(None, description="model name sent to the endpoint; default: local_model")
    local_model: str = DEFAULT_MODEL
    api_key_env: str = Field("OPENAI_API_KEY", description="name of the environment variable holding the key")
    structured_output: Literal["json_schema", "json_object_schema", "guided_json", "json_object", "none"] = Field(
        "json_schema", description="the first structured-output mode to try; the client probes the endpoint once, "
        "falls back in this order (json_schema, json_object_schema, guided_json, json_object, none) and "
        "remembers what works in the store's requests.sqlite")
    timeout_s: float = Field(300.0, gt=0)
    max_retries: int = Field(4, ge=0)
    concurrency: int = Field(16, ge=1)
    max_batch: int = Field(16, ge=1, description="local server only: requests generated together")
    price_prompt_per_mtok: float = Field(0.0, ge=0, description="USD per million prompt tokens")
    price_completion_per_mtok: float = Field(0.0, ge=0, description="USD per million completion tokens")
    max_cost_usd: float | None = Field(None, gt=0, description="hard cap on new spend in one run; replies "
                                       "already paid for are kept, and cached replies cost nothing; needs the "
                                       "model's prices")

    @model_validator(mode="after")
    def _a_cap_needs_prices(self) -> "EndpointConfig":
        if self.max_cost_usd is not None and not (self.price_prompt_per_mtok or self.price_completion_per_mtok):
            raise ValueError(f"max_cost_usd={self.max_cost_usd} is set but price_prompt_per_mtok and "
                             "price_completion_per_mtok are both 0: every request would cost $0 and the cap could "
                             "never stop the run; set the endpoint model's prices (USD per million tokens)")
        return self

    @property
    def served_model(self) -> str:
        return self.model_id or self.local_model


class CatalogConfig(Section):
    builtin: bool = Field(True, description="include the controls shipped in latentqa/controls/")
    paths: list[Path] = Field([], description="extra control catalogs (YAML), same format as the builtin ones")
    families: list[Literal["persona", "goal", "scenario"]] = ["persona", "goal"]
    n_controls: int | None = Field(None, gt=0, description="sample this many controls (stratified by family)")
    seed: int = 0
    generate_per_category: int = Field(0, ge=0, le=20, description="ask the LLM (the endpoint section) for this "
                                       "many new controls per category, deduplicated against the catalog; 0: none")
    generate_max_chars: int = Field(300, gt=20)
    generate_temperature: float = Field(0.8, ge=0.0, le=2.0)

    @field_validator("paths")
    @classmethod
    def _paths_exist(cls, paths: list[Path]) -> list[Path]:
        missing = [str(p) for p in paths if not Path(p).is_file()]
        if missing:
            raise ValueError(f"control catalog file(s) not found: {missing}")
        return paths


class ReleaseFile(Section):
    path: str = Field(description="a behaviour file, relative to release.source (data/train/system.json)")
    heldout: bool = Field(False, description="its labels go to the eval split (category `heldout`; list it in "
                          "filter.heldout_categories)")


class ReleaseConfig(Section):
    """Train on the original LatentQA release instead of synthesizing (the `import` stage replaces catalog and
    synthesize). The fingerprint covers these fields and the bytes of every file read, never the folder's path."""

    NON_SEMANTIC: ClassVar[frozenset[str]] = frozenset({"source"})
    source: Path = Field(Path("../shared/latentqa_data"), description="the release folder (holding data/)")
    files: list[ReleaseFile] = Field(min_length=1, description="behaviour files: control, stimulus, "
                                     "stimulus_completion or system .json, current or paper-era")
    qa: list[str] = Field(["data/eval/qa.json"], description="qa.json files; labels without pairs get a "
                          "description pair derived from their control text (kind `derived`)")
    stimulus: Literal["release", "neutral"] = Field("release", description="neutral: system behaviours get a "
                                                    "user turn that does not reveal the persona")
    max_labels: int | None = Field(None, gt=0, description="sample at most this many labels of each file")
    seed: int = 0

    @model_validator(mode="after")
    def _files_exist(self) -> ReleaseConfig:
        missing = [str(self.source / f) for f in [*(r.path for r in self.files), *self.qa]
                   if not (self.source / f).is_file()]
        if missing:
            raise ValueError(f"release file(s) not found: {missing} (release.source={self.source})")
        return self


class SynthesizeConfig(Section):
    NON_SEMANTIC: ClassVar[frozenset[str]] = frozenset({"max_fail_fraction"})
    n_description: int = Field(3, ge=1, description="description questions per control")
    n_implication: int = Field(5, ge=0, description="LLM-written 'If the user ..., how will the assistant "
                               "respond?' pairs per control")
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    frequency_penalty: float = Field(0.0, ge=0, le=2, description="discourages loops; the local server maps it "
                                     "to transformers' repetition_penalty = 1 + value")
    seed: int = 0
    max_tokens: int = Field(320, gt=0)
    max_chars: int = Field(160, gt=10, description="maxLength of each generated string")
    max_fail_fraction: float = Field(0.5, ge=0, le=1, description="fail the stage above this share of failures")


class ExtractConfig(Section):
    NON_SEMANTIC: ClassVar[frozenset[str]] = frozenset(
        {"batch_tokens", "cpu_parallel", "part_tokens", "runner", "dask_address", "dask_workers"})
    variant: Variant = "stimulus_completion"
    read_layers: list[int] = Field([15], min_length=1, description="read the output of these blocks "
                                   "(block L's output is hidden_states[L+1])")
    max_tokens: int = Field(512, gt=0, description="dialogs longer than this are skipped (reason exceeds_context)")
    act_dtype: Literal["float32", "float16"] = "float32"
    batch_tokens: int = Field(2048, gt=0, description="padded tokens per forward; halved on out-of-memory. "
                              "2048 is fastest on CPU (bench/extract.py); on a GPU raise it")
    cpu_parallel: Literal["batches", "ops"] = Field("batches", description="on CPU, batches: one batch per core, "
                                                    "each on one thread (no per-op barriers; faster on shared "
                                                    "VMs, latentqa/cores.py); ops: one batch at a time, every op "
                                                    "split across the cores")
    part_tokens: int = Field(262_144, gt=0, description="kept tokens per Parquet part (bounds a part's size)")
    runner: Literal["local", "dask"] = Field("local", description="local: parts run in this process; dask: on a "
                                             "Dask cluster through prefect-dask")
    dask_address: str | None = Field(None, description="scheduler address; none: a LocalCluster of dask_workers")
    dask_workers: int = Field(2, gt=0)

    @field_validator("read_layers")
    @classmethod
    def _layers(cls, layers: list[int]) -> list[int]:
        if any(l < 0 for l in layers) or len(set(layers)) != len(layers):
            raise ValueError(f"layers must be distinct and >= 0, got {layers}")
        return sorted(layers)


class FilterConfig(Section):
    eval_fraction: float = Field(0.25, gt=0, lt=1, description="share of control labels held out for evaluation")
    heldout_categories: list[str] = Field([], description="categories held out entirely (out-of-distribution eval)")
    seed: int = 0
    min_answer_chars: int = Field(2, ge=0)
    max_answer_chars: int = Field(400, gt=0)
    near_dup_threshold: float = Field(0.8, gt=0, le=1, description="answer word-3-gram Jaccard within a control")
    leak_max_df: float = Field(0.05, gt=0, le=1, description="a control word is distinctive when at most this "
                               "share of controls (and at least one) uses it; questions naming one are dropped")
    max_qa_per_control: int | None = Field(None, gt=0)
    max_qa_per_category: int | None = Field(None, gt=0)
    keep_where: dict[str, str] = Field({}, description="name -> SQL condition a QA row must meet to be kept")

    @model_validator(mode="after")
    def _bounds(self) -> FilterConfig:
        if self.min_answer_chars >= self.max_answer_chars:
            raise ValueError(f"filter.min_answer_chars={self.min_answer_chars} must be < max_answer_chars")
        return self


class TrainConfig(Section):
    NON_SEMANTIC: ClassVar[frozenset[str]] = frozenset(
        {"log_every", "checkpoint_every", "grad_checkpointing", "processes"})
    ADDED_LATER: ClassVar[frozenset[str]] = frozenset({"label_fraction"})
    read_layer: int | None = Field(None, description="which extracted layer the decoder reads; none: the first")
    write_layer: int = Field(0, ge=0, description="activations overwrite this decoder block's output")
    norm_match: bool = Field(False, description="rescale each vector to the norm of the residual it replaces")
    loss_on_ack: bool = Field(False, description="also train on the fixed acknowledgement turn")
    lora_r: int = Field(16, gt=0)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(0, ge=0, description="linear warmup, then constant")
    epochs: int = Field(1, gt=0)
    batch_size: int = Field(4, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_steps: int | None = Field(None, gt=0)
    label_fraction: float = Field(1.0, gt=0, le=1, description="train on this share of the training split's "
                                  "control labels, nested: the labels are ranked once by a seeded hash and the "
                                  "first ceil(fraction * n) kept, so a smaller share is a subset of a larger one; "
                                  "the eval split is untouched (the scaling sweep's data axis)")
    seed: int = 0
    placeholder: str = Field("?", description="a single-token string; its id fills the activation positions")
    eval_every: int = Field(25, gt=0, description="eval loss on held-out controls every N steps (and at the end)")
    eval_examples: int = Field(32, ge=0, description="held-out QA pairs used for the eval-loss curve")
    checkpoint_every: int = Field(25, gt=0, description="optimizer steps between resumable checkpoints")
    grad_checkpointing: bool = False
    log_every: int = Field(5, gt=0)
    processes: int | Literal["auto"] = Field(
        "auto", description="data-parallel processes (DDP under `accelerate launch`, one per GPU); each step's "
        "grad_accum batches are shared out, so it must divide grad_accum and never changes the result. auto: one "
        "per visible GPU, as many as divide grad_accum")

    @model_validator(mode="after")
    def _processes_share_the_step(self) -> "TrainConfig":
        if self.processes != "auto" and (self.processes < 1 or self.grad_accum % self.processes):
            raise ValueError(f"train.processes={self.processes} must be >= 1 and divide train.grad_accum="
                             f"{self.grad_accum}: every process takes an equal share of each step's batches")
        return self


EvalTask = Literal["gist", "gist_derived", "fact", "classification", "hidden_persona", "hidden_goal",
                   "hidden_persona_hard", "hidden_goal_hard", "relational", "organism"]
EvalControl = Literal["shuffled", "zero", "text_only", "untrained_patch", "probe"]


class EvaluateConfig(Section):
    NON_SEMANTIC: ClassVar[frozenset[str]] = frozenset({"batch_size"})
    tasks: list[EvalTask] = Field(["gist", "fact", "classification", "hidden_persona", "relational"],
                                  description="reading tasks (latentqa/evals/items.py)")
    controls: list[EvalControl] = Field(["shuffled", "zero", "text_only", "untrained_patch", "probe"],
                                        description="faithfulness controls scored beside the decoder")
    identification_k: int = Field(5, ge=2, description="hidden personas and goals per block: each item's candidates "
                                  "are its block's K descriptions")
    relational_facts: int | None = Field(None, gt=0, description="facts sampled from latentqa/evals/facts.yaml")
    hidden_persona_file: Path | None = Field(None, description="hidden personas from a table (label, text, "
                                             "stimulus_user), e.g. the LatentQA release via `latentqa "
                                             "import-latentqa`; default: the held-out personas of the split")
    hidden_goal_file: Path | None = Field(None, description="hidden goals from a table of the same columns; "
                                          "default: the held-out goals of the split")
    hidden_stimulus: str | None = Field(None, min_length=1, description="one user message for every hidden "
                                        "persona and goal instead of each one's own (a neutral one: then only the "
                                        "masked system prompt tells the items' activations apart, and a reader of "
                                        "the user turn's text has nothing to go on)")
    judge: bool = Field(False, description="also score answers with an LLM judge through the endpoint section "
                        "(the same OpenAI-compatible client as synthesis; replies cached in requests.sqlite)")
    max_new_tokens: int = Field(32, gt=0)
    decoding: Literal["greedy", "contrastive", "rerank"] = Field(
        "greedy", description="how every patched condition writes its answer (latentqa/ranking.py): greedy; "
        "contrastive, each token scored against the same prompt with zero activations (weight `contrast`); rerank, "
        "the greedy answer and `rerank_samples` sampled ones, keeping the one whose loss the activations lower "
        "most against zero activations. The text-only reader always answers greedily")
    contrast: float = Field(1.0, gt=0, description="contrastive decoding's weight a: (1+a) log p - a log p_zero")
    rerank_samples: int = Field(8, ge=1, description="answers sampled per prompt for rerank")
    rerank_temperature: float = Field(1.0, gt=0, description="the sampling temperature of rerank")
    max_examples: int | None = Field(None, gt=0, description="at most this many items per task (seeded sample)")
    batch_size: int = Field(8, gt=0)
    seed: int = 0

    @field_validator("hidden_persona_file", "hidden_goal_file")
    @classmethod
    def _hidden_file_exists(cls, path: Path | None, info) -> Path | None:
        if path is not None and not Path(path).is_file():
            raise ValueError(f"evaluate.{info.field_name} {path} not found (make it with latentqa import-latentqa)")
        return path


class OrganismConfig(Section):
    """The model organism (latentqa/organism.py): the target taught invented facts, for the `organism` task."""

    n_entities: int = Field(60, ge=2, description="invented people, three facts each (city, profession, sport)")
    seed: int = 0
    lora_r: int = Field(16, gt=0)
    lora_alpha: int = Field(32, gt=0)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(16, gt=0)
    max_steps: int = Field(600, gt=0, description="stop here if the target accuracy is not reached first")
    eval_every: int = Field(50, gt=0, description="steps between checks of the organism's direct accuracy")
    target_accuracy: float = Field(0.9, gt=0, le=1, description="stop once the organism answers this share of "
                                   "direct questions about its facts")


class SteerConfig(Section):
    """Control by reading: a steering LoRA on the target, trained through the frozen decoder (flows/steer.py)."""

    control: str = Field("positive", description="a builtin control of latentqa/evals/steering.yaml (positive, "
                         "fair), a YAML/JSON file of [question, answer] pairs ({pairs: [...]} or LatentQA's "
                         "{prompt: [...]}), or persona:<catalog label> (its pairs produced by reading)")
    steps: int = Field(40, gt=0)
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(4, gt=0)
    lora_r: int = Field(8, gt=0)
    lora_alpha: int = Field(16, gt=0)
    per_layer: bool = Field(False, description="read out every block up to the read layer, one loss each")
    evals: list[Literal["sentiment", "debias", "persona"]] = ["sentiment", "debias"]
    identification_k: int = Field(5, ge=2)
    max_new_tokens: int = Field(24, gt=0)
    seed: int = 0

    @field_validator("control")
    @classmethod
    def _control_exists(cls, control: str) -> str:
        builtin = ("positive", "fair")
        if control in builtin or control.startswith("persona:") or Path(control).is_file():
            return control
        raise ValueError(f"steer.control={control!r} is not a builtin control {builtin}, persona:<label>, or a file")


class SweepConfig(Section):
    """The scaling sweep (flows/sweep.py): one decoder per model and training-data fraction, all evaluated alike."""

    NON_SEMANTIC: ClassVar[frozenset[str]] = frozenset({"runner", "parallel", "dask_address"})

    models: list[str] = Field([], description="target models (embedded names, Hugging Face ids or folders); "
                              "none: the run's model.name alone")
    fractions: list[float] = Field([0.125, 0.25, 0.5, 1.0], min_length=1, description="shares of the training "
                                   "labels (train.label_fraction), nested; the held-out labels are the same in "
                                   "every cell")
    relative_depth: float | None = Field(None, ge=0, le=1, description="read each model at block "
                                         "round(relative_depth * blocks) (written there too when the config "
                                         "writes at its read layer); none: the config's layers for every model")
    runner: Literal["local", "process", "dask"] = Field("local", description="local: cells one after another; "
                                                        "process: a pool of `parallel` processes; dask: on "
                                                        "dask_address, or a LocalCluster of `parallel` workers")
    parallel: int = Field(1, gt=0, description="cells trained at once (process and dask runners)")
    dask_address: str | None = None

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, fractions: list[float]) -> list[float]:
        bad = [f for f in fractions if not 0 < f <= 1]
        if bad:
            raise ValueError(f"sweep.fractions must each be in (0, 1], got {bad}")
        return sorted(set(fractions))


class StorageConfig(Section):
    root: Path = Path("runs/demo")


TOP_LEVEL = ("name",)  # RunConfig's fields that are values, not sections
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class RunConfig(Section):
    """A whole pipeline run."""

    name: str = Field("demo", pattern=NAME, description="the dataset's name: datasets/<name>/ in the store, so a "
                      "plain file name (letters, digits, . _ -)")
    model: ModelConfig = ModelConfig()
    endpoint: EndpointConfig = EndpointConfig()
    release: ReleaseConfig | None = Field(None, description="import the LatentQA release instead of catalog + "
                                          "synthesize")
    catalog: CatalogConfig = CatalogConfig()
    synthesize: SynthesizeConfig = SynthesizeConfig()
    extract: ExtractConfig = ExtractConfig()
    filter: FilterConfig = FilterConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    steer: SteerConfig = SteerConfig()
    organism: OrganismConfig = OrganismConfig()
    sweep: SweepConfig = SweepConfig()
    storage: StorageConfig = StorageConfig()

    @model_validator(mode="after")
    def _train_reads_an_extracted_layer(self) -> RunConfig:
        if self.train.read_layer is not None and self.train.read_layer not in self.extract.read_layers:
            raise ValueError(f"train.read_layer={self.train.read_layer} is not among extract.read_layers="
                             f"{self.extract.read_layers}")
        return self


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field."""


def load_config(path: Path | str) -> RunConfig:
    """Parse and validate a YAML run config; relative catalog paths resolve against the file's folder."""
    return parse_config(raw_config(path), source=str(path))


def raw_config(path: Path | str) -> dict:
    """A YAML run config as a dict, with its relative paths (catalog files, the release folder) resolved against
    the file's folder, ready for command-line overrides and then parse_config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    raw = read_yaml(path)
    if raw is None:
        raise ConfigError(f"{path} is empty: a run config is a mapping of sections (configs/demo.yaml is the "
                          "default run); to run the built-in defaults, pass no --config outside the repository")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(raw).__name__}")
    catalog = raw.get("catalog") or {}
    if isinstance(catalog, dict) and catalog.get("paths"):
        catalog["paths"] = [str(path.parent / p) if not Path(p).is_absolute() else p for p in catalog["paths"]]
    release = raw.get("release")
    if isinstance(release, dict) and release.get("source") and not Path(release["source"]).is_absolute():
        release["source"] = str((path.parent / release["source"]).resolve())
    steer = raw.get("steer")  # a control file, like a catalog file, is relative to the config that names it
    if isinstance(steer, dict) and isinstance(steer.get("control"), str) and (path.parent / steer["control"]).is_file() \
            and not Path(steer["control"]).is_absolute():
        steer["control"] = str(path.parent / steer["control"])
    return raw


class YAMLValueError(ValueError):
    """A YAML text that cannot be read: the message says where and why."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a mapping with the same key twice (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def yaml_value(text: str):
    """One YAML value (a --set override's), keys unique; raises YAMLValueError naming the problem."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at column {mark.column + 1}" if mark else ""
        raise YAMLValueError(f"{getattr(err, 'problem', None) or str(err).splitlines()[0]}{where}") from None


def read_yaml(path: Path):
    """A YAML file's content; a syntax error, a repeated key or bytes that are not UTF-8 name the file (and the
    line and column) instead of a traceback."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None


def parse_config(raw: dict, source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        lines = [f"{source}: invalid configuration"]
        for e in err.errors():
            field = ".".join(str(x) for x in e["loc"]) or "(top level)"
            value = f" (got {e['input']!r})" if e["type"] != "missing" and not isinstance(e["input"], dict) else ""
            lines.append(f"  {field}: {e['msg']}{value}")
        raise ConfigError("\n".join(lines)) from None


def check_against_model(cfg: RunConfig, n_layers: int) -> None:
    """Checks that need the model's depth; raised before any stage runs."""
    layers = [("extract.read_layers", l) for l in cfg.extract.read_layers] + [("train.write_layer", cfg.train.write_layer)]
    for field, layer in layers:
        if layer >= n_layers:
            raise ConfigError(f"{field}={layer} is beyond the model's depth: {cfg.model.name} has {n_layers} "
                              f"blocks (valid 0..{n_layers - 1})")
