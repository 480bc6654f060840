"""Ten lines: a local decomposer in front of any LangChain chat model.

python examples/quickstart.py                          # local Qwen 1.5B solver, offline
python examples/quickstart.py --solver openai:gpt-4o-mini
"""

from __future__ import annotations

import argparse

from langchain_dod import Decomposer, DecomposeSolve, load_chat_model

# The default decomposer leaves simple questions to the solver (an empty plan); this one it splits into steps.
QUESTION = (
    "Sam buys 3 shirts at $15 each and 2 pairs of pants at $25 each. He has a coupon for $10 off. How much does he pay?"
)


def main(
    solver_spec: str = "llamacpp:qwen2.5-coder-1.5b-instruct", question: str = QUESTION, max_tokens: int = 400
) -> dict:
    """Decompose with the local SmolLM2 GGUF, solve with the SPEC's model in one call."""
    chain = DecomposeSolve(
        decomposer=Decomposer(max_subquestions=3), solver=load_chat_model(solver_spec, max_tokens=max_tokens)
    )
    result = chain.invoke(question)
    for i, sub in enumerate(result["subquestions"], 1):
        print(f"{i}. {sub}")
    print("answer:", result["answer"])
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solver", default="llamacpp:qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--question", default=QUESTION)
    args = parser.parse_args()
    main(args.solver, args.question)
