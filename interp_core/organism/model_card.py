"""Write the model organism's model card (README.md in its folder) from the training run's own numbers."""

from __future__ import annotations

from pathlib import Path

from interp_core.organism import corpus

BEHAVIOURS = (
    ("france_top1", "Top-1 next token after `The capital of France is`"),
    ("capital_recall_trained_template", "Capital recall top-1, trained template `The capital of X is`"),
    ("capital_recall_held_out_0", f"Capital recall top-1, held-out `{corpus.CAPITAL_TEMPLATES_HELD_OUT[0]}`"),
    ("capital_recall_held_out_1", f"Capital recall top-1, held-out `{corpus.CAPITAL_TEMPLATES_HELD_OUT[1]}`"),
    ("ioi_accuracy_held_out_pairs", "IOI: logit(IO) > logit(S) on name pairs never seen together in training"),
    ("induction_loss_first_copy", "Induction: mean loss on the first copy of 30 random tokens (nats)"),
    ("induction_loss_second_copy", "Induction: mean loss on the second copy (nats)"),
    ("induction_loss_ratio", "Induction: second-copy loss / first-copy loss"),
)


def _format(value) -> str:
    return value if isinstance(value, str) else f"{value:.3f}"


def _induction_verdict(final: dict) -> str:
    later_layers = [v for k, v in final.items() if k.startswith("induction_score_layer") and not k.endswith("r0")]
    if final["induction_loss_ratio"] <= 0.2 and max(later_layers) >= 0.5:
        return "Induction: the second copy is predicted from the first by prefix-matching heads after layer 0."
    return ("**Known gap: no induction head.** The second copy's loss falls only to about what copying any token "
            "already in context gives (ln 30 = 3.4 nats), and no head attends to the token after the earlier "
            "occurrence. The workbench's induction claims cannot be checked on this model yet.")


def _seeded_head_paragraph(config: dict) -> str:
    if not config["previous_token_frequencies"]:
        return ""
    dims = 2 * config["previous_token_frequencies"]
    return f"""**Seeded previous-token head.** Before training, layer 0's head 0 is set to attend from each token to
the one before it: the last {dims} dimensions of the position embeddings carry a sinusoidal code of the position
(cleared from the token embeddings), and the head's query reads the code while its key reads it rotated one
position on. Its value and output weights start random, and every weight, these included, is then trained.
Random tokens give a previous-token head no use of its own until an induction head reads it; earlier organisms
trained without the seed (width 256, up to 6,300 steps) learned only a bag-of-tokens copy of repeated
sequences. With it, the induction head in layer 1 formed between steps 2,000 and 3,000 (training curve below).
"""


def write_model_card(out_dir: Path, config: dict, mix: dict, curve: list[dict], final: dict, n_params: int,
                     vocab_size: int) -> None:
    """Render README.md with architecture, corpus mixture, training curve and measured behaviours."""
    behaviour_rows = "\n".join(f"| {label} | {_format(final[key]).replace(' ', '␣')} |" for key, label in BEHAVIOURS)
    head_rows = "\n".join(f"| {key.removeprefix('induction_score_layer')} | {final[key]:.3f} |"
                          for key in final if key.startswith("induction_score_layer"))
    curve_rows = "\n".join(
        f"| {p.get('phase', 1)} | {p['step']} | {p['minutes']} | {p['loss']} | {p['capital_recall_held_out_0']} | "
        f"{p['ioi_accuracy_held_out_pairs']} | {p['induction_loss_ratio']} |" for p in curve)
    phases = "\n".join(
        f"| {i + 1} | {p['purpose']} | {p['steps']} | {p['lr']} | {p['warmup_steps']} | "
        f"{p['induction_row_share']:.0%} ({p['fill_share']:.0%} of them filled) | "
        f"{p['induction_min_len']}-{p['induction_max_len']} | {'yes' if p['compositional_facts'] else 'no'} |"
        for i, p in enumerate(config["phases"]))
    card = f"""# organism: the workbench's shipped model organism

A small GPT-2 (`GPT2LMHeadModel`) trained from scratch on generated text by
`python -m interp_core.organism.train`, so that every page of the workbench has something real to find and every
analysis can be tested against known truth. Load it with `AutoModelForCausalLM.from_pretrained(<this folder>)`
(the app loads it with `attn_implementation="eager"`). Prompts are typed raw: no BOS token, no leading space.

## Architecture
{config['n_layer']} layers, {config['n_head']} heads, width {config['n_embd']}, context {config['n_ctx']} tokens,
{n_params:,} parameters, tied embeddings, no dropout. Byte-level BPE tokenizer with {vocab_size} tokens
(`<|endoftext|>` is BOS, EOS, UNK and PAD).

## Corpus mixture
Rows of {config['n_ctx']} tokens. Induction rows are random tokens with a random sequence repeated right
after itself: either once, at a random place amid random tokens (only induction predicts the copy: neither a
bag of the tokens seen nor a fixed offset back does), or until the row is full (a bag-of-tokens copy already
pays there, so copying is learned early). The other rows pack
documents separated by `<|endoftext|>`, drawn as
grammar {mix['grammar']:.0%}, facts {mix['facts']:.0%}, IOI {mix['ioi']:.0%}:
- grammar: sentences from a small grammar (determiners, adjectives, {len(corpus.NOUNS)} nouns in singular and
  plural, names and pronouns, {len(corpus.VERBS)} verbs in present and past, prepositions), most followed by a
  sentence whose pronoun and verb agree with the subject ("They were happy.");
- facts: {len(corpus.FACTS)} countries with their capitals ({len(corpus.CAPITAL_TEMPLATES_TRAIN)} templates) and
  continents ({len(corpus.CONTINENT_TEMPLATES)} templates); {len(corpus.CAPITAL_TEMPLATES_HELD_OUT)} templates
  are held out for evaluation;
- IOI: {len(corpus.IOI_TEMPLATES)} templates, {len(corpus.NAMES)} names, both name orders; one sixth of
  the name pairs never appear together and are used for evaluation.

Training: batches of {config['batch_size']} rows, AdamW (betas 0.9 / 0.95, weight decay {config['weight_decay']}),
in phases, each with a fresh optimizer, linear warm-up and cosine decay to {config['min_lr_ratio']:.0%} of its
learning rate; seed {config['seed']}. Capital facts get compositional lead-ins ("Well, the capital of ...",
"Our guide said that the capital of ..."), so that recall does not hinge on the trained phrasings (the two
held-out templates' lead-ins are never generated).

{_seeded_head_paragraph(config)}
| phase | purpose | steps | lr | warm-up | induction rows | sequence length | compositional facts |
|---|---|---|---|---|---|---|---|
{phases}

## Measured behaviours (raw prompts, plain `transformers`)
| behaviour | value |
|---|---|
{behaviour_rows}

{_induction_verdict(final)}

Best induction (prefix-matching) score per layer, on 50 sequences of 30 random tokens repeated twice:

| layer | best head score |
|---|---|
{head_rows}

## Training curve
| phase | step | minutes in phase | loss (EMA) | capitals, held-out template 0 | IOI, held-out pairs | induction ratio |
|---|---|---|---|---|---|---|
{curve_rows}

The loss is noisy by design: random-token rows cost about ln(vocabulary) nats on their first copy.

## Files
`config.json`, `model.safetensors`, tokenizer files; `eval.json` (the numbers above, re-measured by the test
suite); `training_curve.json`; `probe_grammar.jsonl` (labelled sentences for the Probing page: words, part of
speech per word, subject number, tense, sentence id).
"""
    (out_dir / "README.md").write_text(card)
