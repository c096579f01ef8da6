"""A tiny Llama model built locally (no hub access) for tests and benchmarks that run vLLM.

The model has random weights, two layers and a byte-level BPE tokenizer trained here on a
generated corpus, saved the way a hub checkpoint is (``config.json``, ``model.safetensors``,
``tokenizer.json`` with a chat template). Its answers are noise, but vLLM loads it in a second,
serves every OpenAI endpoint with it, and runs it on the CPU backend (head size 32).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["CACHE_ENV", "MODEL_DIR_NAME", "build_tiny_model", "tiny_model_path"]

#: Environment variable naming the directory the tiny model is cached in.
CACHE_ENV = "BERTH_TEST_CACHE"
#: Name of the model directory inside the cache.
MODEL_DIR_NAME = "tiny-llama"

_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_WORDS = (
    "the a model server token request answer question worker node port launch start stop "
    "log state ready health chat completion prompt batch queue engine cache memory fast small "
    "tiny llama berth vllm plan run test hello world one two three four five six seven eight "
    "nine ten is are was be to of and in that it for on with as at by from this"
).split()
_VOCAB_SIZE = 512
_MAX_LEN = 2048


def build_tiny_model(dest: Path) -> Path:
    """Write the tiny model into the new directory ``dest`` (its parent must exist); return it."""
    dest = Path(dest)
    dest.mkdir()
    tokenizer = _train_tokenizer()
    _save_tokenizer(tokenizer, dest)
    _save_model(dest, vocab_size=tokenizer.get_vocab_size())
    return dest


def tiny_model_path() -> Path:
    """The cached tiny model, built on first use; safe when several processes race to build it.

    The cache is ``$BERTH_TEST_CACHE/tiny-llama`` (default ``<repo>/.cache/tiny-llama``). A
    builder works in a private temporary directory and renames it into place; a loser of the
    race throws its copy away and uses the winner's.
    """
    dest = _cache_root() / MODEL_DIR_NAME
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{MODEL_DIR_NAME}-", dir=dest.parent))
    try:
        built = build_tiny_model(scratch / MODEL_DIR_NAME)
        _publish(built, dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dest


def _cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file():
        return repo / ".cache"
    return Path.home() / ".cache" / "berth"


def _publish(built: Path, dest: Path) -> None:
    """Rename ``built`` to ``dest`` atomically; if another process got there first, keep its."""
    try:
        os.rename(built, dest)
    except OSError:
        if not (dest / "config.json").is_file():
            raise


def _corpus() -> list[str]:
    """Deterministic sentences over a small word list (plus digits and punctuation)."""
    lines = []
    count = len(_WORDS)
    for i in range(4000):
        words = [_WORDS[(i * 7 + j * 13) % count] for j in range(3 + i % 9)]
        lines.append(" ".join(words).capitalize() + (". " if i % 3 else "? ") + str(i))
    return lines


def _train_tokenizer():  # -> tokenizers.Tokenizer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return tokenizer


def _save_tokenizer(tokenizer, dest: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",
        model_max_length=_MAX_LEN,
    )
    fast.chat_template = _CHAT_TEMPLATE
    fast.save_pretrained(dest)


def _save_model(dest: Path, *, vocab_size: int) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,  # head size 32: the smallest the CPU attention backend takes
        num_key_value_heads=2,
        max_position_embeddings=_MAX_LEN,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=True,
        torch_dtype="bfloat16",  # what vLLM picks on CPU anyway: no cast at load
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(dest, safe_serialization=True)
    GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2).save_pretrained(dest)
