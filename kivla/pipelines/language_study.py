"""`kivla study language`: does robot training corrupt a real pretrained LM's English, per recipe?

From one vision-aligned SmolLM2 checkpoint (`kivla pretrain --backbone smollm2`), each recipe
(naive, stopgrad, ki, frozen) trains the same steps on the same world data, once without and once
with real-English co-training (training docstrings of Python's standard library in the mixture's
"text" share). Before and after: perplexity of the LM on held-out standard-library docstrings (other
modules than the training ones; written by CPython's authors, not by this project), greedy
continuations of fixed general-knowledge prompts, and the world's VQA accuracy.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import json
import math
import os
import sys
import sysconfig
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kivla.data.example import Example

RECIPES = ("naive", "stopgrad", "ki", "frozen")
LANGUAGE_SHARE = 0.3  # captions + VQA (+ real text) in every run's batches; robot chunks the other 0.7
PROMPTS = (
    "The capital of France is",
    "Water freezes at a temperature of",
    "The largest planet in the solar system is",
    "The chemical symbol for gold is",
    "Romeo and Juliet was written by",
    "Monday, Tuesday, Wednesday,",
)


@dataclass(frozen=True)
class LanguageStudyConfig:
    work: Path = Path("runs/language_study")
    report: Path = Path("docs/results")
    align_steps: int = 40
    steps: int = 10
    batch_size: int = 8
    lr: float = 1e-4
    seed: int = 0
    episodes: int = 20
    horizon: int = 16
    recipes: tuple[str, ...] = RECIPES
    text_ratio: float = 0.15  # share of real English text in a batch, with co-training
    heldout_windows: int = 32  # 64-token windows of held-out docstrings for perplexity
    num_vqa: int = 40
    precision: str = "bf16"
    # Extra runs of naive and ki (those of `recipes`), without real text, with the flow loss
    # weighted by each of these (λ_flow; 1 in the runs above): where naive training starts to move
    # the LM's English, and that ki's backbone does not see the flow loss at any weight.
    flow_weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name in (
            "align_steps",
            "steps",
            "batch_size",
            "episodes",
            "horizon",
            "heldout_windows",
            "num_vqa",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"LanguageStudyConfig.{name}: expected >= 1, got {getattr(self, name)}")
        unknown = set(self.recipes) - set(RECIPES)
        if unknown:
            raise ValueError(f"LanguageStudyConfig.recipes: expected among {RECIPES}, got {sorted(unknown)}")
        if any(not w > 0 for w in self.flow_weights):
            raise ValueError(f"LanguageStudyConfig.flow_weights: expected each > 0, got {self.flow_weights}")
        if not 0 < self.text_ratio < LANGUAGE_SHARE:
            raise ValueError(
                f"LanguageStudyConfig.text_ratio: expected in (0, {LANGUAGE_SHARE}), got {self.text_ratio}"
            )


def study_runs(config: LanguageStudyConfig) -> list[tuple[str, str, bool, float]]:
    """The study's runs in order: (name, recipe, with real text, flow weight). Every recipe with
    and without real text at flow weight 1, then naive and ki without text at each extra weight
    ("naive@flow10")."""
    runs = [
        (f"{recipe}{'+text' if text else ''}", recipe, text, 1.0)
        for recipe in config.recipes
        for text in (False, True)
    ]
    swept = [r for r in ("naive", "ki") if r in config.recipes]
    return runs + [(f"{r}@flow{w:g}", r, False, float(w)) for w in config.flow_weights for r in swept]


# -- real English text -----------------------------------------------------------------------------
def stdlib_docstrings() -> dict[str, list[str]]:
    """{"train": [...], "heldout": [...]}: docstrings (>= 200 characters, mostly letters) of the
    standard library's top-level modules, split by module name (a fixed hash: about 1 in 3 held out)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out: dict[str, list[str]] = {"train": [], "heldout": []}
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/__init__.py")):
        module = path.stem if path.name != "__init__.py" else path.parent.name
        if module.startswith("_") or "test" in module:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        split = "heldout" if zlib.crc32(module.encode()) % 3 == 0 else "train"
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = " ".join((ast.get_docstring(node) or "").split())
                if len(doc) >= 200 and sum(c.isalpha() or c.isspace() for c in doc) > 0.85 * len(doc):
                    out[split].append(doc)
    heldout = list(dict.fromkeys(out["heldout"]))  # a docstring copied between modules: held out only
    seen = set(heldout)
    return {"train": [d for d in dict.fromkeys(out["train"]) if d not in seen], "heldout": heldout}


def token_windows(tokenizer, texts: list[str], length: int, count: int) -> list[list[int]]:
    """The first `count` windows of `length` tokens of the concatenated texts."""
    ids: list[int] = []
    for text in texts:
        ids += tokenizer.encode(text + "\n")
        if len(ids) >= length * count:
            break
    return [ids[i * length : (i + 1) * length] for i in range(min(count, len(ids) // length))]


class RealTextMixture:
    """A `MixtureSampler` whose "text" draws are chunks of real English instead of the world's text."""

    def __init__(self, sampler, texts: list[str]) -> None:
        self.sampler, self.texts = sampler, texts

    def __getattr__(self, name: str):
        """Everything else (the robot data, `robot_has_labels`, ...) is the wrapped sampler's."""
        if name in ("sampler", "texts"):  # not yet set: no recursion
            raise AttributeError(name)
        return getattr(self.sampler, name)

    def draw_source(self, rng: np.random.Generator) -> str:
        return self.sampler.draw_source(rng)

    def draw(self, rng: np.random.Generator) -> Example:
        if self.draw_source(copy.deepcopy(rng)) != "text":
            return self.sampler.draw(rng)  # draws its source from rng the same way
        self.draw_source(rng)
        words = self.texts[int(rng.integers(len(self.texts)))].split()
        start = int(rng.integers(max(1, len(words) - 40)))
        return Example(prompt="", answer=" ".join(words[start : start + 40]), kind="text", lm=True)


# -- measurements ----------------------------------------------------------------------------------
@torch.no_grad()
def lm_perplexity(backbone, windows: list[list[int]], batch_size: int = 8) -> float:
    """Perplexity of the backbone's LM, as a plain causal LM, on token windows (every next token)."""
    nll, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        ids = torch.tensor(windows[start : start + batch_size])
        hidden = backbone.text_model(input_ids=ids).last_hidden_state
        logits = backbone.lm_logits(hidden[:, :-1]).float()
        nll += float(F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum"))
        count += ids[:, 1:].numel()
    return math.exp(nll / count)


@torch.no_grad()
def greedy_continuations(backbone, tokenizer, prompts=PROMPTS, new_tokens: int = 6) -> list[str]:
    out = []
    for prompt in prompts:
        ids = tokenizer.encode(prompt)
        for _ in range(new_tokens):
            hidden = backbone.text_model(input_ids=torch.tensor([ids])).last_hidden_state
            ids.append(int(backbone.lm_logits(hidden[:, -1]).argmax(-1)))
        out.append(tokenizer.decode(ids[len(tokenizer.encode(prompt)) :]))
    return out


def measure(bundle, windows: list[list[int]], num_vqa: int) -> dict[str, Any]:
    from kivla.eval.language import LanguageConfig, language_metrics

    policy = bundle.policy.eval()
    lang = language_metrics(bundle, LanguageConfig(num_vqa=num_vqa, num_caption=0, num_text=0, batch_size=16))
    return {
        "perplexity": lm_perplexity(policy.backbone, windows),
        "continuations": greedy_continuations(policy.backbone, bundle.builder.text),
        "vqa_accuracy": lang["vqa_accuracy"],
    }


# -- the study -------------------------------------------------------------------------------------
def _log(message: str) -> None:
    print(f"[study language] {message}", flush=True)


def run_language_study(config: LanguageStudyConfig) -> Path:
    """Align (or reuse the aligned checkpoint), train every recipe with and without real text,
    measure, and write <report>/language_study.md and .json."""
    from kivla.data.world_dataset import generate_dataset
    from kivla.io import write_json
    from kivla.model.bundle import PolicyBundle
    from kivla.train import run
    from kivla.train.config import TrainConfig

    started = time.time()
    work = Path(config.work)
    data = work / "data" / f"train_64px_{config.episodes}ep"
    if not (data / "meta" / "info.json").is_file():
        generate_dataset(data, config.episodes, image_size=64, seed=0, video=False, progress=False)
    align_dir = work / "align"
    aligned = (
        run.latest_checkpoint(align_dir / "checkpoints") if (align_dir / "checkpoints").is_dir() else None
    )
    if aligned is None:
        _log(f"vision alignment, {config.align_steps} steps")
        pre = run.PretrainConfig(
            out=align_dir,
            steps=config.align_steps,
            batch_size=config.batch_size,
            lr=1e-3,
            seed=config.seed,
            backbone="smollm2",
            precision=config.precision,
        )
        aligned = run.pretrain_backbone(pre, progress=False)
    align_s = time.time() - started
    corpus = stdlib_docstrings()
    reference = PolicyBundle.load(aligned, weights="model")
    windows = token_windows(reference.builder.text, corpus["heldout"], 64, config.heldout_windows)
    reserved = reference.builder.layout.state_offset
    share = float(np.mean([i >= reserved for w in windows for i in w]))
    _log(f"held-out windows: {len(windows)} x 64 tokens; measuring the aligned backbone")
    results: dict[str, Any] = {"aligned": measure(reference, windows, config.num_vqa)}
    del reference

    for name, recipe, with_text, flow_weight in study_runs(config):
        out = work / "runs" / name
        t0 = time.time()
        text = config.text_ratio if with_text else 0.0  # taken from the caption / VQA share
        keep = 1 - text / LANGUAGE_SHARE
        mixture = run.MixtureConfig(robot=1 - LANGUAGE_SHARE, caption=0.1 * keep, vqa=0.2 * keep, text=text)
        train = TrainConfig(
            steps=config.steps,
            batch_size=config.batch_size,
            lr=config.lr,
            seed=config.seed,
            warmup_steps=max(1, config.steps // 10),
            save_every=config.steps,
            keep_last=1,
            ema_decay=None,
            precision=config.precision,
            log_every=1,
        )
        rc = run.RunConfig(
            recipe=recipe,
            data=data,
            out=out,
            init=aligned,
            horizon=config.horizon,
            mixture=mixture,
            train=train,
            tokenizer_fit_chunks=500,
            policy_overrides={"flow_weight": flow_weight} if flow_weight != 1 else {},
        )
        key = json.loads(json.dumps({"run": rc.to_dict(), "text_ratio": text, "num_vqa": config.num_vqa,
                                     "heldout_windows": config.heldout_windows}, default=str))  # fmt: skip
        cached = out / "study_result.json"  # a finished run is measured once: rerunning resumes
        stored = json.loads(cached.read_text()) if cached.is_file() else {}
        if stored.get("key") == key:
            results[name] = stored["result"]
            _log(f"{name}: finished before, measured then")
            continue
        bundle, batches = run.build_policy(rc)
        if with_text:
            batches.sampler = RealTextMixture(batches.sampler, corpus["train"])
        outcome = run._run_trainer(bundle, batches, train, out, {"run": rc.to_dict()}, False, False, None)
        step_s = [1 / h["steps_per_s"] for h in outcome.history if h.get("steps_per_s")]
        results[name] = {
            **measure(bundle, windows, config.num_vqa),
            "flow_weight": flow_weight,
            "train_s": time.time() - t0,
            "step_s": float(np.median(step_s)) if step_s else float("nan"),
            "final_losses": {k: v for k, v in outcome.history[-1].items() if k.startswith("loss/")},
        }
        write_json(cached, {"key": key, "result": results[name]})
        r = results[name]
        _log(f"{name}: perplexity {r['perplexity']:.2f}, VQA {r['vqa_accuracy']:.3f}")
        del bundle, batches

    meta = {
        "config": {k: str(v) for k, v in dataclasses.asdict(config).items()},
        "corpus": {k: {"docstrings": len(v), "characters": sum(map(len, v))} for k, v in corpus.items()},
        "heldout_tokens": len(windows) * 64,
        "heldout_reserved_id_share": share,
        "python": sys.version.split()[0],
        "align_s": align_s,
        "wall_s": time.time() - started,
        "torch_threads": torch.get_num_threads(),
    }
    return write_report(config.report, results, meta)


def write_report(directory: Path, results: dict[str, Any], meta: dict[str, Any]) -> Path:
    from kivla.io import write_json

    directory = Path(directory)
    write_json(directory / "language_study.json", {"results": results, "meta": meta})
    base = results["aligned"]
    lines = [
        "# Language study: a real LM's English under robot training, per recipe",
        "",
        "Generated by `kivla study language` (kivla/pipelines/language_study.py); "
        "numbers: language_study.json.",
        "",
        f"- Held-out text: {meta['heldout_tokens']} tokens of docstrings of Python {meta['python']}'s "
        f"standard library ({meta['corpus']['heldout']['docstrings']} docstrings, "
        f"{meta['corpus']['heldout']['characters']:,} characters, modules disjoint from the "
        f"{meta['corpus']['train']['docstrings']} training docstrings); "
        f"{100 * meta['heldout_reserved_id_share']:.2f}% of its tokens fall on the 1,280 ids kivla reserves "
        "for state bins and actions.",
        f"- Config: {json.dumps(meta['config'])}",
        f"- Wall time {meta['wall_s'] / 60:.1f} min (alignment {meta['align_s'] / 60:.1f} min).",
        "",
        "| run | held-out perplexity | vs aligned | world VQA | median s/step | final losses |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        losses = ", ".join(f"{k.removeprefix('loss/')} {v:.3f}" for k, v in r.get("final_losses", {}).items())
        step = f"{r['step_s']:.1f}" if "step_s" in r else "–"
        lines.append(
            f"| {name} | {r['perplexity']:.3f} | {r['perplexity'] / base['perplexity']:.4f}× | "
            f"{r['vqa_accuracy']:.3f} | {step} | {losses} |"
        )
    lines += [
        "",
        "Greedy continuations (6 tokens):",
        "",
        "| run | " + " | ".join(f"`{p}`" for p in PROMPTS) + " |",
        "|---|" + "---|" * len(PROMPTS),
    ]
    for name, r in results.items():
        cells = [c.replace("|", "\\|").replace("\n", " ") for c in r["continuations"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    path = directory / "language_study.md"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path
