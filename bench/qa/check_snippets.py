"""Check a QA set's snippets against the text the retrieval bench chunks.

Each document is parsed and cached by ``retrieval_corpus.load_corpus`` and cleaned as the bench
cleans it (``clean_text``, PDF reflow on). A question passes if its normalised answer occurs in
its source, on one line of the cleaned text (a table row counts once however many merged cells
repeat it), in no other document, and not in the question itself. Exit status 1 on any failure.

Usage: ``python bench/qa/check_snippets.py QA_JSONL CORPUS [--cache DIR]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrieval_corpus import DEFAULT_CACHE, load_corpus

from genai_ingest.config import CleanSettings
from genai_ingest.search.evaluate import normalise
from genai_ingest.text.clean import clean_text


def problems(question: dict, texts: dict[str, str]) -> list[str]:
    """What is wrong with one question (empty if nothing)."""
    answer = normalise(question["answer"])
    source = texts.get(question["source"])
    if source is None:
        return ["source not parsed"]
    found = []
    lines = [line for line in source.splitlines() if answer in normalise(line)]
    count = normalise(source).count(answer)
    if count == 0:
        found.append("not in source")
    elif not lines:
        found.append("crosses a line break")
    elif count > 1 and not (len(lines) == 1 and lines[0].count("|") > 2):
        found.append(f"{count} times in source")
    others = [name for name, text in texts.items() if name != question["source"]]
    found += [f"also in {name}" for name in others if answer in normalise(texts[name])]
    if answer in normalise(question["question"]):
        found.append("answer in question")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("qa", type=Path)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    settings = CleanSettings(reflow_hard_wrapped=True)
    texts = {
        doc["source"]: clean_text(doc["text"], settings, hard_wrapped=doc["format"] == "pdf")
        for doc in load_corpus(args.corpus, args.cache)
    }
    questions = [json.loads(line) for line in args.qa.read_text().splitlines() if line.strip()]
    failed = 0
    for number, question in enumerate(questions, 1):
        if found := problems(question, texts):
            failed += 1
            where = f"line {number} ({question['source']})"
            print(f"{where}: {question['answer']!r}: {'; '.join(found)}")
    passed = len(questions) - failed
    print(f"{passed} of {len(questions)} snippets pass over {len(texts)} documents")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
