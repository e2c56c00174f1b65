"""`latentqa ui` (make ui): a reading playground on 127.0.0.1, built with Gradio.

Pick a trained decoder of a store, type a dialog and questions, and see the decoder's answers beside the
controls' (latentqa/playground.py), with the masked and read tokens shown; browse evaluation and steering
reports. Gradio serves its own bundled front end (no CDN), runs each request on a worker thread of its queue
and shows its progress; the theme uses system fonts, so the page needs no network at all.
"""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

from latentqa.cards import score_rows
from latentqa.decoder import DecoderInfo
from latentqa.evals.harness import DECODINGS
from latentqa.playground import CONDITIONS, Playground, PlaygroundError
from latentqa.reader import ReaderError
from storage import export, outputs
from storage.manifest import Manifest
from storage.store import Store, StoreError, read_manifest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
MONO_FONTS = ["ui-monospace", "monospace"]


class Decoders:
    """The store's trained decoders, each loaded once (loading takes seconds; a question, a fraction of that)."""

    def __init__(self, root: Path):
        self.store = Store(root)
        self._loaded: dict[str, Playground] = {}
        self._lock = threading.Lock()

    def choices(self) -> list[tuple[str, str]]:
        trained = sorted((m for m in self.store.manifests() if m.stage == "train"), key=lambda m: m.created_at,
                         reverse=True)
        return [(f"{m.dir}  ({m.created_at[:16]})", m.dir) for m in trained]

    def get(self, rel: str) -> Playground:
        path = self._dir(rel)
        with self._lock:
            if rel not in self._loaded:
                self._loaded[rel] = Playground(path)
            return self._loaded[rel]

    def _manifest(self, rel: str, stages: tuple[str, ...] = ("train",)) -> Manifest:
        try:
            manifest = read_manifest(self.store.root / rel) if rel else None
        except StoreError:
            manifest = None
        if manifest is None or manifest.stage not in stages:
            raise PlaygroundError(f"no {' or '.join(stages)} directory {rel!r} in {self.store.root}: pick one "
                                  "from the list")
        return manifest

    def _dir(self, rel: str) -> Path:
        self._manifest(rel)
        return self.store.root / rel

    def read_layer(self, rel: str) -> int:
        """The layer the decoder was trained to read (decoder.json; no model is loaded)."""
        return DecoderInfo.load(self._dir(rel) / "decoder.json").read_layer

    def about(self, rel: str) -> str:
        facts = export.decoder_facts(self._dir(rel))
        info, data = facts["info"], facts["dataset"]
        lines = [f"**{rel}**: base `{info['base_model']}`, reads block {info['read_layer']}, writes block "
                 f"{info['write_layer']}, variant `{info['variant']}`",
                 f"training data: dataset `{data['name']}` version `{data['version'][:12]}`" if data else
                 "training data: no recorded dataset version",
                 "lineage: " + " <- ".join(f"{c['stage']} `{c['fingerprint'][:12]}`" for c in facts["chain"])]
        if facts["scores"]:
            lines.append("\n| task | condition | metric | value | 95% interval | n |\n|---|---|---|---|---|---|")
            lines.append(score_rows(facts["scores"]))
        return "\n\n".join(lines[:3]) + "\n" + "\n".join(lines[3:])

    def other_dialog(self, rel: str, seed: int = 0) -> dict | None:
        """A stored dialog of the decoder's own data, the shuffled control's source (None if none is left)."""
        train = self._manifest(rel)
        split = next((self.store.finished(i.stage, i.fingerprint) for i in train.inputs if i.stage == "filter"), None)
        synth = next((self.store.finished(i.stage, i.fingerprint) for i in (split.inputs if split else [])
                      if i.stage in ("synthesize", "import")), None)
        rows = outputs.dialogs(self.store, synth) if synth else []
        return random.Random(seed).choice(rows) if rows else None

    def reports(self) -> list[tuple[str, str]]:
        made = sorted((m for m in self.store.manifests() if m.stage in ("evaluate", "steer")),
                      key=lambda m: m.created_at, reverse=True)
        return [(f"{m.dir}  ({m.created_at[:16]})", m.dir) for m in made]


def build(root: Path):
    import gradio as gr

    decoders = Decoders(root)

    def describe(rel):
        try:
            return decoders.about(rel), decoders.read_layer(rel)
        except (PlaygroundError, ReaderError, StoreError) as err:
            return f"**Cannot use this decoder:** {err}", None

    def ask(rel, system, prompt, reply, layer, questions, references, candidates, decoding, progress=gr.Progress()):
        try:
            progress(0.1, desc="loading the decoder")
            pg = decoders.get(rel)
            other = decoders.other_dialog(rel)
            progress(0.3, desc="reading the dialog and answering")
            readings = pg.ask_all(questions.splitlines(), prompt, system or "", reply or "",
                                  references.splitlines() if references else None,
                                  None if layer in (None, "") else int(layer), other,
                                  candidates=candidates.splitlines() if candidates else None,
                                  decoding=decoding or "greedy")
            given = pg.given(prompt, system or "", reply or "")
        except (PlaygroundError, ReaderError) as err:
            return f"**Cannot read this:** {err}", None, None, None
        table = [[r.question if c == CONDITIONS[0] else "", c, r.answers[c],
                  f"{r.losses[c]:.3f}" if r.losses else ""] for r in readings for c in CONDITIONS if c in r.answers]
        ranking = [[r.question if c == CONDITIONS[0] else "", c,
                    " > ".join(f"{cand} ({score:+.3f})" for cand, score in r.ranking[c])]
                   for r in readings if r.ranking for c in CONDITIONS if c in r.ranking]
        note = (f"Answered {len(readings)} question(s) reading layer {readings[0].layer}. "
                + (f"`shuffled` read the stored dialog `{other['dialog_id']}`." if other
                   else "No stored dialog for the shuffled control."))
        return note, given.spans(), table, ranking or None

    def show_report(rel):
        if not rel:
            return "", None
        try:
            manifest = decoders._manifest(rel, ("evaluate", "steer"))
        except PlaygroundError as err:
            return f"**No report:** {err}", None
        report = decoders.store.path(manifest, "report.md").read_text()
        scores = decoders.store.root / rel / "scores.png"
        return report, str(scores) if scores.is_file() else None

    with gr.Blocks(title="latentqa playground", analytics_enabled=False) as page:
        gr.Markdown("# latentqa playground\nAsk a decoder about the target's activations on any dialog, and see "
                    "what each control answers beside it.")
        with gr.Tab("Read"):
            choices = decoders.choices()
            decoder = gr.Dropdown(choices=choices, value=choices[0][1] if choices else None, label="Decoder")
            with gr.Accordion("This decoder: layers, training data, lineage, scores", open=False):
                about = gr.Markdown()
            with gr.Row():
                system = gr.Textbox(label="System prompt (the control: masked, never shown to the decoder)",
                                    value="Talk like a pirate.")
                prompt = gr.Textbox(label="User message (read)", value="How was your weekend?")
                reply = gr.Textbox(label="Assistant reply (optional, read)")
            with gr.Row():
                questions = gr.Textbox(label="Questions, one per line", lines=3,
                                       value="What persona is the assistant adopting?")
                references = gr.Textbox(label="Reference answers, one per line (optional: adds each "
                                        "condition's loss)", lines=3)
                candidates = gr.Textbox(label="Candidate answers, one per line (optional: each condition ranks "
                                        "them)", lines=3)
            with gr.Row():
                first = choices[0][1] if choices else None
                layer = gr.Number(label="Read layer", precision=0, value=decoders.read_layer(first) if first else None)
                decoding = gr.Dropdown(choices=list(DECODINGS), value="greedy", label="Decoding (greedy, "
                                       "contrastive, or rerank: the answer the activations make most likely "
                                       "against zeros)")
            go = gr.Button("Ask", variant="primary")
            message = gr.Markdown(elem_id="message")
            answers = gr.Dataframe(headers=["question", "condition", "answer", "loss of the reference"],
                                   label="Answers: the decoder and its controls", wrap=True, elem_id="answers",
                                   column_widths=["22%", "12%", "56%", "10%"], interactive=False)
            ranking = gr.Dataframe(headers=["question", "condition", "candidates, best first (loss minus "
                                            "the loss under zero activations; raw loss for text_only)"],
                                   label="What each condition ranks", wrap=True, elem_id="ranking",
                                   column_widths=["22%", "12%", "66%"], interactive=False)
            tokens = gr.HighlightedText(label="What the decoder was given, token by token: masked (the control) "
                                        "and read", color_map={"masked": "#bbbbbb", "read": "#4caf50"},
                                        show_inline_category=False, show_legend=True)
            decoder.change(describe, decoder, [about, layer])
            page.load(describe, decoder, [about, layer])
            go.click(ask, [decoder, system, prompt, reply, layer, questions, references, candidates, decoding],
                     [message, tokens, answers, ranking])
        with gr.Tab("Reports"):
            reports = decoders.reports()
            pick = gr.Dropdown(choices=reports, value=reports[0][1] if reports else None,
                               label="Evaluation or steering report")
            image = gr.Image(label="scores.png", type="filepath", interactive=False)
            text = gr.Markdown()
            pick.change(show_report, pick, [text, image])
            page.load(show_report, pick, [text, image])
    return page


def launch(root: Path, port: int = 7860, block: bool = True):
    import gradio as gr

    page = build(root)
    page.queue(default_concurrency_limit=1)  # one reading at a time: a CPU has no room for two
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=not block, show_error=False,
                allowed_paths=[str(Path(root).resolve())], inbrowser=False,
                theme=gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS))
    return page
