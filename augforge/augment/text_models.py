"""Model-based text ops from **local** Hugging Face model directories: back-translation and contextual
(masked-LM) substitution. transformers is an optional extra (``pip install 'augforge[models]'``).

Nothing is ever downloaded: a path must be a directory holding ``config.json`` and the tokenizer
files, and models are opened with ``local_files_only=True`` under ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import os
import random
from functools import lru_cache
from pathlib import Path

from augforge.augment.words import Words, is_word, match_case
from augforge.errors import AugforgeError, first_line


def _check_dir(path: str, where: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise AugforgeError(f"{where}: {path}: no such model directory (models are read from local directories, "
                            "never downloaded)")
    if not (folder / "config.json").is_file():
        raise AugforgeError(f"{where}: {path}: not a Hugging Face model directory (no config.json); save one with "
                            "model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR)")
    return folder


@lru_cache(maxsize=8)
def load_local(path: str, kind: str, where: str = "model"):
    """(tokenizer, model) from a local directory; ``kind`` is ``seq2seq`` or ``mlm``."""
    folder = _check_dir(path, where)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        from transformers import AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoTokenizer
    except ImportError:
        raise AugforgeError(f"{where}: needs transformers; pip install 'augforge[models]'") from None
    loader = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForMaskedLM
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = loader.from_pretrained(folder, local_files_only=True).eval()
    except (OSError, ValueError, KeyError) as exc:
        raise AugforgeError(f"{where}: {path}: cannot be loaded as a {kind} model ({first_line(exc)})") \
            from None
    return tokenizer, model


def back_translate(text: str, forward, backward, rng: random.Random, max_length: int = 256) -> str:
    """Translate with ``forward`` (tokenizer, model) and back with ``backward``, sampling with seeds from ``rng``."""
    import torch

    out = text
    for tokenizer, model in (forward, backward):
        torch.manual_seed(rng.getrandbits(63))
        batch = tokenizer([out], return_tensors="pt", truncation=True, max_length=max_length)
        batch.pop("token_type_ids", None)
        with torch.no_grad():
            ids = model.generate(**batch, do_sample=True, top_k=50, max_new_tokens=max_length)
        out = tokenizer.decode(ids[0], skip_special_tokens=True).strip()
        if not out:  # nothing came back: no variant (the build drops it as identical to its source)
            return text
    return out


def contextual(text: str, tokenizer, model, rng: random.Random, protected: list[str], aug_p: float = 0.15,
               top_k: int = 5) -> str:
    """Replace a share ``aug_p`` of the unprotected words, each by one of the masked LM's ``top_k`` guesses."""
    import torch

    if tokenizer.mask_token is None:
        raise AugforgeError("contextual: the tokenizer has no mask token; use a masked language model")
    words = Words.of(text)
    tokens = words.tokens
    keep = {p.lower() for p in protected}
    places = [i for i, t in enumerate(tokens) if is_word(t) and t.lower() not in keep]
    rng.shuffle(places)
    for i in places[: max(1, int(aug_p * len(places)))] if places else []:
        batch = tokenizer(words.replace(i, tokenizer.mask_token).text(), return_tensors="pt", truncation=True)
        where = (batch["input_ids"][0] == tokenizer.mask_token_id).nonzero()
        if len(where) == 0:
            continue
        with torch.no_grad():
            logits = model(**batch).logits[0, int(where[0])]
        candidates = []
        for token_id in torch.topk(logits, min(len(logits), top_k * 4)).indices.tolist():
            word = tokenizer.decode([token_id]).strip()
            if word.isalpha() and word.lower() != tokens[i].lower() and word.lower() not in keep:
                candidates.append(word)
            if len(candidates) == top_k:
                break
        if candidates:
            words = words.replace(i, match_case(rng.choice(candidates), tokens[i]))
    return words.text()


def model_op(name: str, params: dict, where: str):
    """The ``(text, rng, protected) -> text`` callable of a model-based op (models are loaded now)."""
    if name == "back_translation":
        forward = load_local(params["from_model"], "seq2seq", f"{where}.from_model")
        backward = load_local(params["to_model"], "seq2seq", f"{where}.to_model")
        return lambda text, rng, protected: back_translate(text, forward, backward, rng, int(params["max_length"]))
    tokenizer, model = load_local(params["model_path"], "mlm", f"{where}.model_path")
    return lambda text, rng, protected: contextual(text, tokenizer, model, rng, protected, float(params["aug_p"]),
                                                   int(params["top_k"]))
