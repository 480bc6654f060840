"""MuSiQue-Ans for the multi-hop retrieval benchmark and for training a multi-hop decomposer.

MuSiQue: Trivedi, Balasubramanian, Khot, Sabharwal, "MuSiQue: Multihop Questions via Single-hop Question
Composition", TACL 2022; data licence CC BY 4.0. The files are read where they lie, ``../shared/data/musique/``
beside the checkout (or ``$DOD_MUSIQUE_DIR``); see the SOURCE.md there. They are never copied into this
repository.

- :func:`load_questions` reads the 292 evaluation questions (``dev_eval292.jsonl``): each with its 20
  paragraphs, their supporting flags, the hop count and the gold decomposition.
- :func:`pooled_corpus` pools their paragraphs into one retrieval corpus, deduplicated by title + text.
- :func:`training_questions` reads the gold decompositions a decomposer may learn from: the answerable dev
  questions that are *not* evaluation questions (2,125) plus the 100 train questions.
- :func:`step_to_question` turns a Wikidata-style step ``"subject >> relation"`` into a question.
- :func:`recall_at_k` / :func:`summarize_recall`: recall@k of the supporting paragraphs, and the share of
  questions with all of them in the top k, overall and by hop count.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from langchain_dod.references import ReferenceMode, rewrite_references, tidy

__all__ = [
    "EVAL_FILE",
    "DECOMPOSITIONS_FILE",
    "TRAIN_FILE",
    "MusiqueQuestion",
    "Paragraph",
    "STEP_STYLES",
    "Step",
    "all_at_k",
    "default_dir",
    "document_id",
    "gold_queries",
    "load_decompositions",
    "load_questions",
    "paragraph_id",
    "pooled_corpus",
    "recall_at_k",
    "reference_noun",
    "step_to_question",
    "summarize_recall",
    "training_questions",
]

EVAL_FILE = "dev_eval292.jsonl"
DECOMPOSITIONS_FILE = "dev_decompositions2417.json"
TRAIN_FILE = "train100.json"


def default_dir() -> Path:
    """``$DOD_MUSIQUE_DIR``, else ``shared/data/musique`` beside the checkout (where SOURCE.md puts it)."""
    if env := os.environ.get("DOD_MUSIQUE_DIR"):
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "musique"


def paragraph_id(title: str, text: str) -> str:
    """A stable id for a paragraph: its title plus a hash of title and text (the dedup key of the corpus).

    The title keeps results readable; the hash separates the several paragraphs of one Wikipedia title.
    """
    digest = hashlib.sha1(f"{title}\x00{text}".encode()).hexdigest()[:10]
    return f"{title}#{digest}"


@dataclass(frozen=True)
class Paragraph:
    """One paragraph of a question's reading list."""

    title: str
    text: str
    is_supporting: bool = False

    @property
    def id(self) -> str:
        """See :func:`paragraph_id`."""
        return paragraph_id(self.title, self.text)


@dataclass(frozen=True)
class Step:
    """One gold decomposition step, as MuSiQue writes it (a question or ``"subject >> relation"``, maybe ``#N``)."""

    question: str
    answer: str
    paragraph_idx: int | None = None


@dataclass(frozen=True)
class MusiqueQuestion:
    """A MuSiQue question with its gold decomposition; ``paragraphs`` is empty for the decomposition-only file."""

    id: str
    question: str
    answer: str
    steps: tuple[Step, ...]
    paragraphs: tuple[Paragraph, ...] = ()
    aliases: tuple[str, ...] = ()

    @property
    def hops(self) -> int:
        """The number of decomposition steps (2, 3 or 4; it matches the ``2hop__``/``3hop1__`` id prefix)."""
        return len(self.steps)

    @property
    def supporting_ids(self) -> tuple[str, ...]:
        """Ids of the supporting paragraphs, without repeats, in paragraph order."""
        return tuple(dict.fromkeys(p.id for p in self.paragraphs if p.is_supporting))


def _record(raw: dict[str, Any], where: str) -> MusiqueQuestion:
    try:
        steps = tuple(
            Step(question=s["question"], answer=s["answer"], paragraph_idx=s.get("paragraph_support_idx"))
            for s in raw["question_decomposition"]
        )
        paragraphs = tuple(
            Paragraph(title=p["title"], text=p["paragraph_text"], is_supporting=bool(p["is_supporting"]))
            for p in raw.get("paragraphs", ())
        )
        return MusiqueQuestion(
            id=raw["id"],
            question=raw["question"],
            answer=raw["answer"],
            steps=steps,
            paragraphs=paragraphs,
            aliases=tuple(raw.get("answer_aliases") or ()),
        )
    except (KeyError, TypeError) as err:
        raise ValueError(
            f"{where} is not a MuSiQue record (missing or malformed {err}); expected the official schema with "
            "id, question, answer, question_decomposition[{question, answer}] and optionally paragraphs."
        ) from err


def _read(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Records of a ``.jsonl`` (one per line) or ``.json`` (a list) file, each with where it came from."""
    if not path.is_file():
        raise FileNotFoundError(
            f"MuSiQue file not found: {path}. The data lives in ../shared/data/musique beside the checkout "
            "(see SOURCE.md there); point DOD_MUSIQUE_DIR at another folder that holds it."
        )
    if path.suffix == ".jsonl":
        out = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    out.append((f"{path}:{number}", json.loads(line)))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number} is not valid JSON: {err}") from err
        return out
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path} should hold a JSON list of MuSiQue records, got {type(data).__name__}.")
    return [(f"{path}[{i}]", r) for i, r in enumerate(data)]


def _load(path: Path) -> list[MusiqueQuestion]:
    questions = [_record(raw, where) for where, raw in _read(path)]
    seen: set[str] = set()
    for q in questions:
        if q.id in seen:
            raise ValueError(f"{path} holds question id {q.id!r} twice.")
        seen.add(q.id)
    return questions


def load_questions(path: str | os.PathLike[str] | None = None, limit: int | None = None) -> list[MusiqueQuestion]:
    """The evaluation questions (default ``dev_eval292.jsonl``), in file order; ``limit``: the first N.

    Every question must have paragraphs and at least one supporting paragraph, or recall is undefined.
    """
    path = Path(path) if path is not None else default_dir() / EVAL_FILE
    questions = _load(path)[:limit]
    for q in questions:
        if not q.supporting_ids:
            raise ValueError(f"{path}: question {q.id} has no supporting paragraph; recall cannot be scored.")
    return questions


def load_decompositions(path: str | os.PathLike[str]) -> list[MusiqueQuestion]:
    """Every record of one MuSiQue file (``.json`` list or ``.jsonl``), paragraphs or not, in file order."""
    return _load(Path(path))


def pooled_corpus(questions: Iterable[MusiqueQuestion]) -> list[Document]:
    """All paragraphs of ``questions`` as one corpus, deduplicated by title + text, in first-seen order.

    ``Document.id`` is :func:`paragraph_id` (what :attr:`MusiqueQuestion.supporting_ids` names); the content
    is the title on its own line, then the text, since titles carry many of the entities a step names.
    """
    corpus: dict[str, Document] = {}
    for q in questions:
        for p in q.paragraphs:
            if p.id not in corpus:
                corpus[p.id] = Document(id=p.id, page_content=f"{p.title}\n{p.text}", metadata={"title": p.title})
    return list(corpus.values())


def document_id(doc: Document) -> str | None:
    """The paragraph id of a retrieved document: ``Document.id``, else ``metadata["id"]``.

    Vector stores differ: ``InMemoryVectorStore`` keeps ``Document.id``; langchain-community's
    ``SKLearnVectorStore`` returns it in ``metadata["id"]`` only.
    """
    return doc.id or doc.metadata.get("id")


def training_questions(
    folder: str | os.PathLike[str] | None = None, exclude: Collection[str] | None = None
) -> list[MusiqueQuestion]:
    """Gold decompositions to train on: the dev decompositions minus ``exclude``, then the train questions.

    ``exclude`` defaults to the ids of the evaluation file in the same folder, so that training never sees an
    evaluation question (2,417 - 292 = 2,125 dev questions remain, plus 100 train questions).
    """
    folder = Path(folder) if folder is not None else default_dir()
    if exclude is None:
        exclude = {q.id for q in _load(folder / EVAL_FILE)}
    dev = [q for q in _load(folder / DECOMPOSITIONS_FILE) if q.id not in exclude]
    train = [q for q in _load(folder / TRAIN_FILE) if q.id not in exclude]
    return dev + train


# -- steps as questions ---------------------------------------------------------------------------------------

RELATION_TEMPLATES: dict[str, str] = {
    # the most frequent Wikidata relations in MuSiQue's "subject >> relation" steps; the rest use the generic
    # "What is the <relation> of <subject>?", which retrieves as well and reads well enough
    "located in the administrative territorial entity": "In what administrative territorial entity is {s} located?",
    "contains administrative territorial entity": "What administrative territorial entity does {s} contain?",
    "performer": "Who is the performer of {s}?",
    "place of birth": "Where was {s} born?",
    "place of death": "Where did {s} die?",
    "country": "What country is {s} in?",
    "headquarters location": "Where is the headquarters of {s}?",
    "shares border with": "What shares a border with {s}?",
    "member of sports team": "What sports team is {s} a member of?",
    "author": "Who is the author of {s}?",
    "spouse": "Who is the spouse of {s}?",
    "child": "Who is the child of {s}?",
    "father": "Who is the father of {s}?",
    "mother": "Who is the mother of {s}?",
    "sibling": "Who is the sibling of {s}?",
    "operator": "Who operates {s}?",
    "creator": "Who created {s}?",
    "cast member": "Who is a cast member of {s}?",
    "educated at": "Where was {s} educated?",
    "owned by": "Who owns {s}?",
    "employer": "Who employs {s}?",
    "manufacturer": "Who manufactures {s}?",
    "winner": "Who won {s}?",
    "composer": "Who composed {s}?",
    "location of formation": "Where was {s} formed?",
    "instance of": "What is {s} an instance of?",
    "member of": "What is {s} a member of?",
    "part of": "What is {s} part of?",
    "location": "Where is {s} located?",
    "work location": "Where did {s} work?",
    "located on terrain feature": "On what terrain feature is {s} located?",
    "capital of": "What is {s} the capital of?",
    "continent": "On what continent is {s}?",
    "director": "Who directed {s}?",
    "producer": "Who produced {s}?",
    "publisher": "Who published {s}?",
    "founded by": "Who founded {s}?",
    "named after": "What is {s} named after?",
    "followed by": "What followed {s}?",
    "follows": "What did {s} follow?",
    # the rarer relations of the training decompositions whose generic question reads badly
    "record label": "What record label is {s} on?",
    "country of citizenship": "What country is {s} a citizen of?",
    "platform": "On what platform is {s} available?",
    "mouth of the watercourse": "What body of water does {s} flow into?",
    "licensed to broadcast to": "Where is {s} licensed to broadcast?",
    "has part": "What is part of {s}?",
    "located in or next to body of water": "What body of water is {s} located on or next to?",
    "member of political party": "What political party is {s} a member of?",
    "screenwriter": "Who wrote the screenplay of {s}?",
    "part of the series": "What series is {s} part of?",
    "original language of film or tv show": "What is the original language of {s}?",
    "notable work": "What is a notable work of {s}?",
    "participant in": "What did {s} participate in?",
    "participant": "Who participated in {s}?",
    "conflict": "What conflict did {s} take part in?",
    "award received": "What award did {s} receive?",
    "production company": "What company produced {s}?",
    "movement": "What movement is {s} associated with?",
    "league": "What league does {s} play in?",
    "developer": "Who developed {s}?",
    "distributed by": "Who distributed {s}?",
    "occupant": "Who occupies {s}?",
    "present in work": "In what work does {s} appear?",
    "original broadcaster": "What network originally broadcast {s}?",
    "crosses": "What does {s} cross?",
    "based on": "What is {s} based on?",
    "languages spoken, written or signed": "What languages does {s} speak?",
    "drafted by": "What team drafted {s}?",
    "place served by transport hub": "What place does {s} serve?",
    "military branch": "In what military branch did {s} serve?",
    "residence": "Where did {s} live?",
    "applies to jurisdiction": "What jurisdiction does {s} apply to?",
    "sport": "What sport does {s} play?",
}
GENERIC_TEMPLATE = "What is the {r} of {s}?"


# What kind of thing a step's answer is, for writing a reference to it as "that <noun>" ("Where was that person
# born?"): by the relation of a "subject >> relation" step, else by the question's wh-phrase.
_PERSON_RELATIONS = (
    "performer",
    "author",
    "spouse",
    "child",
    "father",
    "mother",
    "sibling",
    "creator",
    "composer",
    "director",
    "producer",
    "founded by",
    "cast member",
    "screenwriter",
    "winner",
    "occupant",
    "developer",
)
_PLACE_RELATIONS = (
    "located in the administrative territorial entity",
    "contains administrative territorial entity",
    "place of birth",
    "place of death",
    "headquarters location",
    "location of formation",
    "location",
    "work location",
    "capital",
    "capital of",
    "shares border with",
    "licensed to broadcast to",
    "residence",
)
RELATION_NOUNS: dict[str, str] = {
    **dict.fromkeys(_PERSON_RELATIONS, "person"),
    **dict.fromkeys(_PLACE_RELATIONS, "place"),
    "country": "country",
    "country of citizenship": "country",
    "country of origin": "country",
    "continent": "continent",
    "member of sports team": "team",
    "record label": "label",
    "educated at": "school",
    "employer": "employer",
    "operator": "operator",
    "owned by": "owner",
    "manufacturer": "manufacturer",
    "publisher": "publisher",
    "mouth of the watercourse": "river",
    "located in or next to body of water": "body of water",
    "located on terrain feature": "feature",
    "religion": "religion",
    "platform": "platform",
    "league": "league",
    "member of political party": "party",
    "production company": "company",
}
_WH_NOUN = re.compile(r"^(?:in |on |at |for |of |from |to |by )?(?:what|which)\s+([a-z]+)\b", re.I)
_WH_WORD = {"who": "person", "whom": "person", "whose": "person", "where": "place", "when": "time"}
_THE_REFERENCE = re.compile(r"\bthe\s+(#\s?\d+)", re.I)
_NOT_NOUNS = frozenset("is was are were does did do has had have can could will would of in on the a an".split())


def reference_noun(step: str) -> str:
    """The kind of thing ``step``'s answer is, as a noun: "person", "place", "time", "country", ... ("one" if unknown).

    ``"#1 >> performer"`` -> ``"person"``; ``"What city is #1 in?"`` -> ``"city"``; ``"When was X founded?"`` ->
    ``"time"``. Used to write a reference to that answer as ``"that <noun>"`` (the ``typed`` step writing).
    """
    text = tidy(step)
    if ">>" in text:
        return RELATION_NOUNS.get(text.partition(">>")[2].strip().lower(), "one")
    if match := _WH_NOUN.match(text):
        noun = match.group(1).lower()
        if noun not in _NOT_NOUNS:
            return noun
    first = re.match(r"[a-z]+", text.lower())
    return _WH_WORD.get(first.group(0), "one") if first else "one"


def _as_question(text: str) -> str:
    """Capitalised, ending in "?" (MuSiQue's crowd-written steps are often neither: "when was #3 established")."""
    text = tidy(text).rstrip(" .")
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith("?") else text + "?"


def step_to_question(step: str, mode: ReferenceMode = "keep", answers: dict[int, str] | None = None) -> str:
    """A decomposition step as a natural question, with its ``#N`` written as ``mode`` says.

    ``"Van Hook Township >> located in the administrative territorial entity"`` becomes
    ``"In what administrative territorial entity is Van Hook Township located?"``; a step that is already a
    question is tidied, capitalised and given its question mark (``"when was #3 established"`` ->
    ``"When was #3 established?"``). ``mode``/``answers``: see
    :func:`~langchain_dod.references.rewrite_references` (``fill`` with the gold answers gives the filled-gold
    ceiling).
    """
    if ">>" in step:
        subject, _, relation = (part.strip() for part in step.partition(">>"))
        template = RELATION_TEMPLATES.get(relation.lower(), GENERIC_TEMPLATE)
        step = template.format(s=subject, r=relation)
    return rewrite_references(_as_question(step), mode, answers)


STEP_STYLES: tuple[str, ...] = ("raw", "keep", "drop", "it", "that", "typed", "fill")
"""How :func:`gold_queries` writes a step: ``raw`` as MuSiQue has it ("X >> relation", ``#N`` kept); the rest
as natural questions with each ``#N`` kept, dropped, written "it" / "that" / "that <noun>" (``typed``, the noun
from :func:`reference_noun`: "Where was that person born?"), or filled with step N's gold answer (``fill``)."""


def gold_queries(question: MusiqueQuestion, mode: str = "keep") -> list[str]:
    """The gold steps written in one of the :data:`STEP_STYLES`; ``fill`` uses the gold answers."""
    if mode not in STEP_STYLES:
        raise ValueError(f"Unknown step style {mode!r}; choose one of {', '.join(STEP_STYLES)}.")
    steps = question.steps
    if mode == "raw":
        return [tidy(s.question) for s in steps]
    if mode == "fill":
        answers = {i: s.answer for i, s in enumerate(steps, 1)}
        return [step_to_question(s.question, "fill", answers) for s in steps]
    if mode == "typed":
        nouns = {i: f"that {reference_noun(s.question)}" for i, s in enumerate(steps, 1)}
        # "the #1" -> "that person", not "the that person"
        return [step_to_question(_THE_REFERENCE.sub(r"\1", s.question), "fill", nouns) for s in steps]
    return [step_to_question(s.question, mode, None) for s in steps]  # type: ignore[arg-type]


# -- the metric -------------------------------------------------------------------------------------------------


def recall_at_k(ranked_ids: Sequence[str | None], gold: Collection[str], k: int) -> float:
    """Share of the ``gold`` paragraph ids found in the first ``k`` of ``ranked_ids``."""
    if not gold:
        raise ValueError("recall@k needs at least one gold (supporting) paragraph id.")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    top = set(ranked_ids[:k])
    return sum(g in top for g in set(gold)) / len(set(gold))


def all_at_k(ranked_ids: Sequence[str | None], gold: Collection[str], k: int) -> bool:
    """True when *all* ``gold`` paragraph ids are in the first ``k`` of ``ranked_ids``."""
    return recall_at_k(ranked_ids, gold, k) == 1.0


def summarize_recall(rows: Iterable[dict[str, Any]], ks: Sequence[int] = (2, 5, 10)) -> dict[str, dict[str, Any]]:
    """Mean recall@k and all@k, overall (``"all"``) and by hop count (``"2"``, ``"3"``, ``"4"``).

    Each row needs ``hops``, ``ranked`` (paragraph ids, best first) and ``supporting`` (gold ids).
    """
    groups: dict[str, list[dict[str, Any]]] = {"all": []}
    for row in rows:
        groups["all"].append(row)
        groups.setdefault(str(row["hops"]), []).append(row)
    out: dict[str, dict[str, Any]] = {}
    for name in ["all", *sorted(g for g in groups if g != "all")]:
        members = groups[name]
        entry: dict[str, Any] = {"questions": len(members)}
        for k in ks:
            recalls = [recall_at_k(r["ranked"], r["supporting"], k) for r in members]
            entry[f"recall@{k}"] = round(statistics.fmean(recalls), 4) if recalls else None
            entry[f"all@{k}"] = round(sum(v == 1.0 for v in recalls) / len(recalls), 4) if recalls else None
        out[name] = entry
    return out
