"""LangGraph fan-out: the decomposer as a node, one ``Send`` per sub-question, answers joined at the end.

    decompose ──Send──▶ answer (sub-question 1) ──┐
              ├─Send──▶ answer (sub-question 2) ──┼──▶ join ──▶ END
              └─Send──▶ answer (sub-question 3) ──┘

Each ``answer`` branch retrieves the two best passages for its own sub-question (BM25 over the example corpus
in ``examples/data/corpus.jsonl``) and asks a small local model for a short answer; ``join`` gives the solver
the question, the passages and the sub-answers in one call (the Divide-or-Conquer solver prompt) and reads the
final answer. The branches run in parallel threads; each local model serialises its own calls, so the fan-out
pays off
with a server or hosted model behind ``answer`` and costs nothing with a local one.

Sub-questions that depend on an earlier answer ("Where was *that person* born?") cannot see it in a parallel
fan-out: the join step, which sees every passage, is where the hops meet.

Run:  ``python examples/langgraph_fanout.py``
      ``python examples/langgraph_fanout.py --question "..." --solver qwen2.5-coder-1.5b-instruct``
"""

from __future__ import annotations

import argparse
import json
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from langchain_dod import ChatGGUF, Decomposer
from langchain_dod.decomposer import default_decomposer_llm
from langchain_dod.parsing import extract_answer
from langchain_dod.prompts import solver_messages

__all__ = ["build_graph", "main"]

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_QUESTION = "In which city was the composer of the Moonlight Sonata born?"


class State(TypedDict, total=False):
    """The graph's state; ``answers`` is appended to by every parallel branch."""

    question: str
    subquestions: list[str]
    answers: Annotated[list[dict[str, Any]], operator.add]
    solution: str
    answer: str | None


class Branch(TypedDict):
    """What one ``Send`` carries to an ``answer`` node."""

    index: int
    subquestion: str


def _passages(path: Path = DATA / "corpus.jsonl") -> list[str]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [f"{r['title']}. {r['text']}" for r in rows]


def build_graph(decomposer: Decomposer, sub_solver: BaseChatModel, solver: BaseChatModel, passages_k: int = 2):
    """Compile the decompose → (Send × n) answer → join graph."""
    from langchain_community.retrievers import BM25Retriever

    retriever = BM25Retriever.from_texts(_passages(), k=passages_k)

    def decompose(state: State) -> dict[str, Any]:
        return {"subquestions": decomposer.invoke(state["question"]).subquestions}

    def fan_out(state: State) -> list[Send]:
        # no sub-questions ("answer directly") still sends the question itself through one branch
        items = state["subquestions"] or [state["question"]]
        return [Send("answer", Branch(index=i, subquestion=q)) for i, q in enumerate(items)]

    def answer(branch: Branch) -> dict[str, Any]:
        docs = retriever.invoke(branch["subquestion"])
        context = "\n".join(d.page_content for d in docs)
        reply = sub_solver.invoke(solver_messages(branch["subquestion"], context, mode="direct"))
        text = str(reply.content)
        return {"answers": [{**branch, "passages": context, "answer": extract_answer(text) or text.strip()}]}

    def join(state: State) -> dict[str, Any]:
        answers = sorted(state["answers"], key=lambda a: a["index"])
        context = "\n".join(dict.fromkeys(a["passages"] for a in answers))  # passages once, in branch order
        found = "\n".join(f"- {a['subquestion']} → {a['answer']}" for a in answers)
        reply = solver.invoke(
            solver_messages(
                state["question"],
                f"{context}\n\nAnswers found so far:\n{found}",
                [a["subquestion"] for a in answers],
            )
        )
        return {"solution": str(reply.content), "answer": extract_answer(str(reply.content))}

    graph = StateGraph(State)
    graph.add_node("decompose", decompose)
    graph.add_node("answer", answer)
    graph.add_node("join", join)
    graph.add_edge(START, "decompose")
    graph.add_conditional_edges("decompose", fan_out, ["answer"])
    graph.add_edge("answer", "join")
    graph.add_edge("join", END)
    return graph.compile()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the final state (the smoke test reads it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--question", default=DEFAULT_QUESTION)
    parser.add_argument("--solver", default="smollm2-135m-instruct", help="local GGUF name or path for both solvers")
    parser.add_argument("--max-tokens", type=int, default=48, help="per answer (sub-answers and the final one)")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: physical cores)")
    args = parser.parse_args(argv)
    if args.max_tokens < 1:
        parser.error("--max-tokens must be >= 1")

    solver = ChatGGUF(model=args.solver, max_tokens=args.max_tokens, n_threads=args.threads)
    llm = default_decomposer_llm(profile="multihop", n_threads=args.threads)
    decomposer = Decomposer(llm=llm, profile="multihop", max_tokens=96)
    graph = build_graph(decomposer, sub_solver=solver, solver=solver)
    state = graph.invoke({"question": args.question})
    print(f"Question: {state['question']}")
    for a in sorted(state["answers"], key=lambda a: a["index"]):
        print(f"  [{a['index'] + 1}] {a['subquestion']} → {a['answer']}")
    print(f"Answer: {state['answer']}")
    return state


if __name__ == "__main__":
    main()
