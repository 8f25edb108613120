"""The text ops a recipe may list under ``augment.text``, with their parameters (docs/recipes.md)."""

from __future__ import annotations

from augforge.augment.ops import REQUIRED, OpDef, Param


def _prob(default: float) -> Param:
    return Param("number", default, {"low": 0.0, "high": 1.0})


def _top_k(default: int) -> Param:
    return Param("number", default, {"low": 1, "high": 1000, "integer": True})


def _choice(default: str, options: tuple[str, ...]) -> Param:
    return Param("choice", default, {"options": options})


def _none(*_):
    raise NotImplementedError  # text ops are run by augforge.augment.text, not compiled into DALI


TEXT_OPS: dict[str, OpDef] = {op.name: op for op in (
    OpDef("eda", {"alpha_sr": _prob(0.1), "alpha_ri": _prob(0.1), "alpha_rs": _prob(0.1), "p_rd": _prob(0.1),
                  "techniques": Param("strings", ("sr", "ri", "rs", "rd"), {"options": ("sr", "ri", "rs", "rd")}),
                  "cjk": _choice("run", ("run", "char"))},
          _none, summary="EDA: one of synonym replacement, random insertion, random swap, random deletion"),
    OpDef("keyboard", {"aug_char_p": _prob(0.1), "aug_word_p": _prob(0.1)}, _none,
          summary="nlpaug KeyboardAug: typos from neighbouring keys"),
    OpDef("ocr", {"aug_char_p": _prob(0.1), "aug_word_p": _prob(0.1)}, _none,
          summary="nlpaug OcrAug: OCR confusions (0/o, 1/l, ...)"),
    OpDef("char_random", {"action": _choice("substitute", ("insert", "substitute", "swap", "delete")),
                          "aug_char_p": _prob(0.1), "aug_word_p": _prob(0.1)}, _none,
          summary="nlpaug RandomCharAug"),
    OpDef("word_random", {"action": _choice("swap", ("swap", "delete", "crop", "substitute")),
                          "aug_p": _prob(0.1), "target_words": Param("strings", ())}, _none,
          summary="nlpaug RandomWordAug (substitute draws from target_words)"),
    OpDef("tfidf", {"action": _choice("substitute", ("substitute", "insert")), "aug_p": _prob(0.1),
                    "top_k": _top_k(5)}, _none,
          summary="nlpaug TfIdfAug, trained on the dataset's own texts"),
    OpDef("word_embs", {"model_type": _choice("word2vec", ("word2vec", "glove", "fasttext")),
                        "model_path": Param("path", REQUIRED),
                        "action": _choice("substitute", ("substitute", "insert")),
                        "aug_p": _prob(0.1), "top_k": _top_k(10)}, _none,
          summary="nlpaug WordEmbsAug from a local word2vec / GloVe / fastText file"),
    OpDef("back_translation", {"from_model": Param("path", REQUIRED), "to_model": Param("path", REQUIRED),
                               "max_length": _top_k(256)}, _none,
          summary="translate with a local model and back with another (transformers)"),
    OpDef("contextual", {"model_path": Param("path", REQUIRED), "aug_p": _prob(0.15), "top_k": _top_k(5)},
          _none, summary="substitute words with a local masked language model's predictions (transformers)"),
)}
TEXT_ALIASES = {"synonym": "eda", "typo": "keyboard", "backtranslation": "back_translation", "mlm": "contextual"}
