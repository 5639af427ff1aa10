"""The character/phoneme language model: `transformers.GPT2LMHeadModel` from named size presets.

Presets follow the field's sizes (GPT-2, feed-forward 4*d, 256 positions); the name is the rough
parameter count with a vocabulary of a few dozen phonemes:

| preset | layers | width | heads | parameters |
| 400k   | 2      | 128   | 4     | ~0.4M      |
| 800k   | 4      | 128   | 4     | ~0.8M      |
| 1M     | 6      | 128   | 4     | ~1.2M      |
| 5M     | 6      | 256   | 8     | ~4.8M      |
| 19M    | 6      | 512   | 16    | ~19M       |
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers is slow to import: config validation must not pay for it
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from seg_tune.config import ModelConfig

# name -> (n_layer, n_embd, n_head)
PRESETS: dict[str, tuple[int, int, int]] = {
    "400k": (2, 128, 4),
    "800k": (4, 128, 4),
    "1M": (6, 128, 4),
    "5M": (6, 256, 8),
    "19M": (6, 512, 16),
}


def gpt2_config(cfg: ModelConfig, tokenizer: PreTrainedTokenizerFast) -> GPT2Config:
    """The GPT2Config for a model config and tokenizer (explicit BOS/EOS/PAD ids: the default
    50256 is out of range for a phoneme vocabulary)."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_inner=cfg.n_inner,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel(gpt2_config(cfg, tokenizer))
    # transformers infers the loss from the class name, which for GPT-2 names none, and warns.
    model.loss_type = "ForCausalLM"
    return model


def n_parameters(model: GPT2LMHeadModel) -> int:
    return sum(p.numel() for p in model.parameters())
