"""Offline WordNet 3.0 for synonym augmentation, from Debian's packages or a user's NLTK data directory.

Debian's ``wordnet-base`` and ``wordnet-sense-index`` put the WordNet 3.0 database in
/usr/share/wordnet, but NLTK reads WordNet only from its data directories, and it also needs a
``lexnames`` file that Debian does not ship. ``prepare_nltk_data`` builds an NLTK data directory
(``corpora/wordnet``) from the Debian files: copies, about 35 MB (NLTK refuses symbolic and hard
links, which could lead out of its data directories), plus the ``lexnames`` table of WordNet 3.0
written here. Nothing is downloaded.
"""

from __future__ import annotations

import os
import warnings
from functools import lru_cache
from pathlib import Path

from augforge.errors import AugforgeError

DEBIAN_WORDNET = Path("/usr/share/wordnet")
#: WordNet 3.0's lexicographer files, in order: the ``lexnames`` file NLTK needs (number, name, POS code).
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive "
    "noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation "
    "noun.shape noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
    "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception "
    "verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_POS_CODE = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
REQUIRED_FILES = ("data.noun", "data.verb", "data.adj", "data.adv", "index.noun", "index.verb", "index.adj",
                  "index.adv", "noun.exc", "verb.exc", "adj.exc", "adv.exc")
INSTALL_HINT = ("install it offline with `apt-get install wordnet-base wordnet-sense-index` (Debian/Ubuntu), or "
                "point AUGFORGE_WORDNET at a directory holding WordNet 3.0's dict files")


def lexnames_text() -> str:
    """The ``lexnames`` file of WordNet 3.0: ``NN<TAB>name<TAB>pos-code`` per line."""
    return "".join(f"{i:02d}\t{name}\t{_POS_CODE[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def default_cache() -> Path:
    """Where the prepared NLTK data directory lives: $AUGFORGE_CACHE, else ~/.cache/augforge."""
    return Path(os.environ.get("AUGFORGE_CACHE", Path.home() / ".cache" / "augforge"))


def find_wordnet_dict() -> Path:
    """The WordNet 3.0 ``dict`` directory: $AUGFORGE_WORDNET, or Debian's /usr/share/wordnet."""
    candidates = [Path(os.environ["AUGFORGE_WORDNET"])] if os.environ.get("AUGFORGE_WORDNET") else []
    candidates.append(DEBIAN_WORDNET)
    for folder in candidates:
        if all((folder / name).is_file() for name in REQUIRED_FILES):
            return folder
    raise AugforgeError(f"WordNet 3.0 is not installed (looked in {', '.join(map(str, candidates))}); "
                        f"{INSTALL_HINT}")


def prepare_nltk_data(target: str | Path | None = None, source: Path | None = None) -> Path:
    """Build ``TARGET/corpora/wordnet`` from the WordNet dict files plus ``lexnames``; return TARGET.

    Idempotent and atomic: the corpus folder is assembled under a temporary name and renamed.
    """
    source = source or find_wordnet_dict()
    target = Path(target) if target is not None else default_cache() / "nltk_data"
    corpus = target / "corpora" / "wordnet"
    if (corpus / "lexnames").is_file() and all((corpus / n).exists() for n in REQUIRED_FILES):
        return target
    corpus.parent.mkdir(parents=True, exist_ok=True)
    tmp = corpus.parent / f".wordnet-{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    import shutil

    for path in source.iterdir():
        if path.is_file() and not (tmp / path.name).exists():
            shutil.copyfile(path, tmp / path.name)
    if not (tmp / "lexnames").exists():
        (tmp / "lexnames").write_text(lexnames_text())
    try:
        tmp.rename(corpus)
    except OSError:  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@lru_cache(maxsize=1)
def wordnet():
    """NLTK's WordNet reader over the offline data (a user's NLTK ``corpora/wordnet`` wins when present)."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    user = _user_nltk_wordnet()
    if user is None:
        data = prepare_nltk_data()
        if str(data) not in nltk.data.path:
            nltk.data.path.append(str(data))  # NLTK reads corpora only inside its data directories
        user = data / "corpora" / "wordnet"
    root = user
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": not used here
        return WordNetCorpusReader(str(root), None)


def _user_nltk_wordnet() -> Path | None:
    try:
        import nltk

        for folder in nltk.data.path:
            corpus = Path(folder) / "corpora" / "wordnet"
            if (corpus / "lexnames").is_file() and (corpus / "data.noun").is_file():
                return corpus
    except ImportError:  # pragma: no cover - nltk is a dependency
        pass
    return None


@lru_cache(maxsize=65536)
def synonyms(word: str, pos: str | None = None) -> tuple[str, ...]:
    """WordNet synonyms of ``word``, lower case, without the word itself.

    ``pos`` (WordNet's n, v, a, r) restricts them to one part of speech; None (no tagger) takes every
    part of speech, as EDA does. Multi-word lemmas come with spaces (``ice_cream`` -> ``ice cream``);
    sorted, so choices are stable.
    """
    found = set()
    for synset in wordnet().synsets(word, pos=pos):
        for lemma in synset.lemma_names():
            candidate = lemma.replace("_", " ").replace("-", " ").lower()
            if candidate != word.lower() and all(ch.isalpha() or ch == " " for ch in candidate):
                found.add(candidate)
    return tuple(sorted(found))


def reopen_after_fork() -> None:
    """In a forked worker: drop the WordNet data files inherited from the parent (their shared file offsets
    would interleave the processes' reads); the reader reopens them on first use."""
    if wordnet.cache_info().currsize:
        wordnet()._data_file_map = {}


#: Penn Treebank tag prefixes -> WordNet parts of speech.
_PENN_TO_WORDNET = {"N": "n", "V": "v", "J": "a", "R": "r"}


@lru_cache(maxsize=1)
def pos_tagger():
    """NLTK's perceptron POS tagger when its data is installed (it is not offline by default), else None."""
    try:
        import nltk

        for name in ("taggers/averaged_perceptron_tagger_eng", "taggers/averaged_perceptron_tagger"):
            try:
                nltk.data.find(name)
            except LookupError:
                continue
            return nltk.pos_tag
    except ImportError:  # pragma: no cover - nltk is a dependency
        pass
    return None


def wordnet_pos(tokens: list[str]) -> list[str | None]:
    """WordNet part of speech per token from the POS tagger when present; all None without one."""
    tagger = pos_tagger()
    if tagger is None:
        return [None] * len(tokens)
    try:
        tags = tagger(tokens)
    except LookupError:
        return [None] * len(tokens)
    return [_PENN_TO_WORDNET.get(tag[:1]) for _, tag in tags]
