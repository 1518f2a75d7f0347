"""The whole pipeline made small: a three-label JSONL data set, a tiny student
and a fake teacher that writes plausible stories and rationales. Used by the
end-to-end tests and by the contract test's audited run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from support.dvc_project import run
from support.teacher_fakeserver import Action, default_content

LABELS = {"earn": 14, "acq": 6, "tea": 1}
BUDGET = 16  # the printed adaptive formula first synthesizes (tea, last stage) at 16


def teacher_reply(key: str, attempt: int, body: dict) -> Action:
    prompt = body["messages"][-1]["content"]
    topic = re.search(r"compose a news story with the topic (\S+)", prompt)
    if topic:  # synthesis: a new story of the asked-for topic, with its rationale
        label = topic.group(1)
        return Action(
            content=f"Input: A brand new story about {label} prices.\n"
            f"Rationale: The story is about {label}. The answer is {label}."
        )
    return Action(content=default_content(body))


def write_data(folder: Path) -> None:
    lines = {"train": [], "test": []}
    for label, n in LABELS.items():
        for i in range(n):
            lines["train"].append({"text": f"{label} report number {i} on {label} markets", "topic": label})
        for i in range(2):
            lines["test"].append({"text": f"{label} test story {i}", "topic": label})
    for split, rows in lines.items():
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def configure(project: Path, teacher_url: str, student_dir: str) -> None:
    """Point `project`'s params at the tiny data, student and teacher, and commit."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"].update(
        dataset="jsonl",
        test_per_domain=None,
        head_threshold=5,
        jsonl={
            "train": "data/raw/train.jsonl",
            "test": "data/raw/test.jsonl",
            "task": "classification",
            "name": "R52",
            "fields": {"id": None, "input": "text", "label": "topic", "domain": "topic"},
        },
    )
    params["budget"]["total"] = BUDGET
    params["policy"]["name"] = "adaptive"
    params["teacher"].update(base_url=teacher_url, model="fake-teacher", concurrency=2, timeout=10, max_retries=2)
    params["student"].update(model=student_dir, max_input_tokens=32, max_rationale_tokens=24)
    params["train"].update(epochs=1, batch_size=4, micro_batch_size=4)
    params["select"].update(candidates_per_row=2, batch_size=8, max_new_tokens=6)
    params["evaluate"].update(batch_size=8, max_new_tokens=6)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_data(project / "data/raw")
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "tiny config")
