"""Train the shipped model organism: `python -m interp_core.organism.train` (about an hour on 2 CPU cores).

Generates the corpus, trains a byte-level BPE tokenizer, trains a small GPT-2, evaluates its behaviours and
writes everything (weights, tokenizer, probing datasets, eval.json, model card) to `models/organism/`.
Seeded: the same command gives the same corpus, tokenizer and (on the same machine and torch) weights.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from interp_core.organism import corpus
from interp_core.organism.evaluate import evaluate_all
from interp_core.organism.model_card import write_model_card

EOS = "<|endoftext|>"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Phase:
    """A stretch of training with its own schedule and share of induction rows; a fresh optimizer each."""

    purpose: str  # one line for the model card
    steps: int
    lr: float
    warmup_steps: int
    induction_row_share: float
    induction_min_len: int  # each induction row repeats one random sequence of this many to ...
    induction_max_len: int  # ... this many tokens (see RowSampler.induction_row)
    compositional_facts: bool  # capital facts with random lead-ins (see corpus.compositional_prefix)
    fill_share: float  # share of induction rows that repeat their sequence until the row is full


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    # ~0.26 s a step on 2 cores. Induction heads form in a sudden change after a plateau, and the earlier
    # organisms (4 layers, width 256, 4,500-6,300 steps) found shortcuts instead: rows of a sequence repeated
    # until the row was full taught only a bag-of-tokens copy, with no previous-token head. Random tokens give
    # a previous-token head no use of its own until an induction head reads it, so layer 0's head 0 starts as
    # one (seed_previous_token_head); half the induction rows are filled with repeats (a bag-of-tokens copy pays
    # there at once, so copying starts) and half hold one repeat amid random tokens (only induction pays). With
    # this, the induction head formed in layer 1 between steps 2,000 and 3,000. Without the seeded head, 2-layer
    # models on random tokens alone learned positional or bag-of-tokens copies, and 4-layer ones stayed at a
    # uniform output for 2,000 steps (findings on issue 3).
    phases: tuple[Phase, ...] = (
        Phase("text with induction rows", 6000, 1e-3, 200, 0.3, 10, 40, True, fill_share=0.5),
    )
    threads: int = 2  # both cores; run it at high priority (see README): its two threads stall if preempted
    batch_size: int = 32
    n_ctx: int = 128  # two copies of a 40-token induction sequence fit with room to spare
    n_layer: int = 4  # induction needs >= 2 layers; 4 leaves room for IOI and probing structure
    n_head: int = 4
    n_embd: int = 128  # 1 M parameters, ~4 MB of safetensors; facts and IOI are learned by step 3,000
    vocab_size: int = 2048  # target; the corpus' word list saturates BPE below it
    tokenizer_docs: int = 40_000
    min_lr_ratio: float = 0.1  # cosine decay to 10% of lr
    weight_decay: float = 0.1
    eval_every: int = 500
    probe_sentences: int = 3000
    previous_token_frequencies: int = 8  # seed layer 0's head 0 with this many (seed_previous_token_head); 0: no


def train_tokenizer(config: TrainConfig, mix: corpus.CorpusMix, held_out) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on generated documents; EOS doubles as BOS, UNK and PAD."""
    rng = random.Random(config.seed + 1)
    docs = [corpus.text_document(rng, mix, held_out) for _ in range(config.tokenizer_docs)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=config.vocab_size, min_frequency=2, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(docs, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                   pad_token=EOS, model_max_length=config.n_ctx)


class RowSampler:
    """Draws training rows of exactly n_ctx tokens: packed text documents or repeated random tokens."""

    def __init__(self, config: TrainConfig, tokenizer, mix: corpus.CorpusMix, held_out, phase_index: int):
        self.config, self.tokenizer, self.mix, self.held_out = config, tokenizer, mix, held_out
        self.phase = config.phases[phase_index]
        self.rng = random.Random(config.seed + 2 + 100 * phase_index)  # phase 1 keeps the original seed
        self.vocab = [i for i in range(len(tokenizer)) if i not in set(tokenizer.all_special_ids)]

    def text_row(self) -> list[int]:
        row: list[int] = []
        while len(row) < self.config.n_ctx:  # every document starts at position 0 or right after EOS
            doc = corpus.text_document(self.rng, self.mix, self.held_out, self.phase.compositional_facts)
            row += self.tokenizer(doc).input_ids + [self.tokenizer.eos_token_id]
        return row[: self.config.n_ctx]

    def induction_row(self) -> list[int]:
        """Random tokens with a random sequence repeated right after itself: either once, amid random tokens
        (copying pays only by induction: neither a bag of the tokens seen nor a fixed offset back predicts the
        copy), or until the row is full (a fill_share of the rows: a bag-of-tokens copy already pays there)."""
        length = self.rng.randint(self.phase.induction_min_len, self.phase.induction_max_len)
        row = [self.rng.choice(self.vocab) for _ in range(self.config.n_ctx)]
        if self.rng.random() < self.phase.fill_share:
            return (row[:length] * math.ceil(self.config.n_ctx / length))[: self.config.n_ctx]
        start = self.rng.randint(0, self.config.n_ctx - 2 * length)
        row[start + length: start + 2 * length] = row[start: start + length]
        return row

    def batch(self) -> torch.Tensor:
        rows = [self.induction_row() if self.rng.random() < self.phase.induction_row_share else self.text_row()
                for _ in range(self.config.batch_size)]
        return torch.tensor(rows)  # [batch, pos]


def row_sampler(tokenizer, seed: int) -> RowSampler:
    """The organism's row sampler (its one phase: packed documents and induction rows) drawing from `seed`."""
    return RowSampler(TrainConfig(seed=seed), tokenizer, corpus.CorpusMix(), corpus.held_out_name_pairs(), 0)


def row_batches(tokenizer, seed: int) -> Iterator[torch.Tensor]:
    """Endless [32, n_ctx] batches of the organism's training rows (its first phase's mix of packed documents and
    induction rows) drawn from `seed`: the text the shipped SAE and tuned lens train and are measured on."""
    sampler = row_sampler(tokenizer, seed)
    while True:
        yield sampler.batch()


def learning_rate(step: int, phase: Phase, min_lr_ratio: float) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio * lr over the phase."""
    if step < phase.warmup_steps:
        return phase.lr * (step + 1) / phase.warmup_steps
    progress = (step - phase.warmup_steps) / max(1, phase.steps - phase.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return phase.lr * (min_lr_ratio + (1 - min_lr_ratio) * cosine)


def build_model(config: TrainConfig, tokenizer) -> GPT2LMHeadModel:
    model_config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=config.n_ctx, n_embd=config.n_embd, n_layer=config.n_layer,
        n_head=config.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # the corpus never repeats
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    model_config._attn_implementation = "sdpa"  # fast for training; the app loads it with eager attention
    return GPT2LMHeadModel(model_config)


def seed_previous_token_head(model: GPT2LMHeadModel, n_frequencies: int, head: int = 0,
                             min_score: float = 0.9) -> float:
    """Initialise layer 0's `head` to attend from each token to the one before it; returns its mean attention
    to the previous token on random tokens (at least `min_score`).

    The last 2 * n_frequencies dimensions of the residual stream carry a sinusoidal code of the position (cleared
    from the token embeddings), and the head's query reads that code while its key reads it rotated one position
    on, so the score peaks at the previous position. Its value and output weights stay random: what the head
    moves, and every other weight, is learned. Without it, repeated random tokens leave a previous-token head
    no use of its own until an induction head reads it, and the models found shortcuts instead (see TrainConfig).
    """
    config = model.config
    d_head, n_pos = config.n_embd // config.n_head, config.n_positions
    dims = torch.arange(config.n_embd - 2 * n_frequencies, config.n_embd)
    omega = 2 * math.pi / torch.logspace(math.log10(3), math.log10(2 * n_pos), n_frequencies)  # periods 3 .. 2 n_pos
    angle = torch.arange(n_pos)[:, None] * omega  # [pos, frequency]
    code = torch.stack([angle.cos(), angle.sin()], dim=-1).flatten(1)  # [pos, 2 * frequency]
    rotate = torch.zeros(2 * n_frequencies, 2 * n_frequencies)  # code[p] @ rotate = code[p + 1]
    for f, w in enumerate(omega.tolist()):
        c, s = math.cos(w), math.sin(w)
        rotate[2 * f: 2 * f + 2, 2 * f: 2 * f + 2] = torch.tensor([[c, s], [-s, c]])
    attn = model.transformer.h[0].attn.c_attn  # Conv1D: [d_model, 3 * d_model] = query | key | value
    columns = slice(head * d_head, head * d_head + 2 * n_frequencies)
    with torch.no_grad():
        token_norm = model.transformer.wte.weight.norm(dim=1).mean()
        model.transformer.wte.weight[:, dims] = 0
        model.transformer.wpe.weight[:, dims] = code * token_norm / math.sqrt(n_frequencies)
        query, key = attn.weight[:, : config.n_embd], attn.weight[:, config.n_embd: 2 * config.n_embd]
        for w, b in ((query, attn.bias[: config.n_embd]), (key, attn.bias[config.n_embd: 2 * config.n_embd])):
            w[:, head * d_head: (head + 1) * d_head] = 0
            b[head * d_head: (head + 1) * d_head] = 0
        for scale in (2.0 ** k for k in range(20)):
            query[dims, columns] = scale * torch.eye(2 * n_frequencies)
            key[dims, columns] = scale * rotate
            score = _previous_token_score(model, head)
            if score >= min_score:
                return score
    raise RuntimeError(f"seed_previous_token_head: score {score:.2f} < {min_score}")


@contextmanager
def eager_attention(model: GPT2LMHeadModel) -> Iterator[None]:
    """Inside the block the model runs eager attention, which returns attention weights (training uses SDPA)."""
    implementation = model.config._attn_implementation
    model.config._attn_implementation = "eager"
    try:
        yield
    finally:
        model.config._attn_implementation = implementation


def _previous_token_score(model: GPT2LMHeadModel, head: int) -> float:
    """Mean attention of layer 0's `head` from each position to the one before it, on random tokens."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(model.config.vocab_size, (4, model.config.n_positions), generator=generator)
    with eager_attention(model):
        pattern = model(ids, output_attentions=True).attentions[0][:, head]  # [batch, query, key]
    positions = torch.arange(1, ids.shape[1])
    return pattern[:, positions, positions - 1].mean().item()


def write_probe_datasets(config: TrainConfig, out_dir: Path) -> None:
    """Labelled grammar sentences (word-level POS, sentence-level number and tense) as JSON lines."""
    rng = random.Random(config.seed + 3)
    with open(out_dir / "probe_grammar.jsonl", "w") as f:
        for sentence_id in range(config.probe_sentences):
            s = corpus.grammar_sentence(rng)
            f.write(json.dumps({"sentence_id": sentence_id, "text": s.text, "words": list(s.words),
                                "pos": list(s.pos_tags), "number": s.number, "tense": s.tense}) + "\n")


def run_phase(model, tokenizer, config: TrainConfig, phase_index: int, mix, held_out, curve: list[dict]) -> None:
    """Train one phase in place, appending an evaluation point to `curve` every eval_every steps."""
    phase, first_step = config.phases[phase_index], sum(p.steps for p in config.phases[:phase_index])
    sampler = RowSampler(config, tokenizer, mix, held_out, phase_index)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=phase.lr, betas=(0.9, 0.95))
    start, running = time.time(), None
    for step in range(phase.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, phase, config.min_lr_ratio)
        model.train()
        batch = sampler.batch()
        loss = model(batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % config.eval_every == 0 or step + 1 == phase.steps:
            with eager_attention(model):  # attention weights for the induction score
                scores = evaluate_all(model, tokenizer)
            point = {"phase": phase_index + 1, "step": first_step + step + 1,
                     "minutes": round((time.time() - start) / 60, 1), "loss": round(running, 3),
                     **{k: v if isinstance(v, str) else round(v, 4) for k, v in scores.items()}}
            curve.append(point)
            print(json.dumps(point), flush=True)
        elif step % 50 == 0:
            print(f"phase {phase_index + 1} step {step} loss {running:.3f} {time.time() - start:.0f}s", flush=True)


def train(config: TrainConfig, out_dir: Path, resume_phase: int = 1) -> None:
    """Run the whole pipeline and write the model folder.

    resume_phase > 1 starts from the folder's saved weights, tokenizer and curve (written after the earlier
    phases by this same script), which gives the same result as one uninterrupted run.
    """
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    torch.set_flush_denormal(True)
    mix, held_out = corpus.CorpusMix(), corpus.held_out_name_pairs()
    if resume_phase == 1:
        tokenizer = train_tokenizer(config, mix, held_out)
        model, curve = build_model(config, tokenizer), []
        if config.previous_token_frequencies:
            score = seed_previous_token_head(model, n_frequencies=config.previous_token_frequencies)
            print(f"previous-token head seeded: score {score:.3f}", flush=True)
    else:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(out_dir)
        model = GPT2LMHeadModel.from_pretrained(out_dir, attn_implementation="sdpa")
        curve = [p for p in json.loads((out_dir / "training_curve.json").read_text())
                 if p.get("phase", 1) < resume_phase]
    for phase_index in range(resume_phase - 1, len(config.phases)):
        run_phase(model, tokenizer, config, phase_index, mix, held_out, curve)
        save(model, tokenizer, config, mix, curve, out_dir)


def save(model, tokenizer, config: TrainConfig, mix, curve: list[dict], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    with eager_attention(model):
        model.save_pretrained(out_dir)  # safetensors
        final = evaluate_all(model, tokenizer)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "eval.json").write_text(json.dumps(final, indent=2) + "\n")
    (out_dir / "training_curve.json").write_text(json.dumps(curve, indent=1) + "\n")
    write_probe_datasets(config, out_dir)
    write_model_card(out_dir, asdict(config), asdict(mix), curve, final, n_params=model.num_parameters(),
                     vocab_size=len(tokenizer))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "models" / "organism")
    parser.add_argument("--resume-phase", type=int, default=1,
                        help="continue from the weights the earlier phases saved in --out")
    parser.add_argument("--quick", action="store_true", help="a few steps per phase, to check the pipeline")
    args = parser.parse_args()
    config = TrainConfig()
    if args.quick:
        config = replace(config, phases=tuple(replace(p, steps=3, warmup_steps=1) for p in config.phases))
    train(config, args.out, args.resume_phase)


if __name__ == "__main__":
    main()
