#!/usr/bin/env python3
"""Check docs/scale/lumen-batch-job.yaml beyond its schema (kubernetes-validate does
that): the Job is Indexed, and `--shard auto/N` names its number of completions, so
that every index has a shard and every shard an index."""

import sys
from pathlib import Path

import yaml

path = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/scale/lumen-batch-job.yaml")
documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
job = next(d for d in documents if d["metadata"]["name"] == "lumen-batch")
spec = job["spec"]
assert spec["completionMode"] == "Indexed", "the batch Job must be Indexed"
command = spec["template"]["spec"]["containers"][0]["command"]
shard = command[command.index("--shard") + 1]
assert shard == f"auto/{spec['completions']}", f"--shard {shard} but completions {spec['completions']}"
assert "--cache" in command, "a retried index resumes only with --cache"
merge = next(d for d in documents if d["metadata"]["name"] == "lumen-merge")
assert merge["spec"]["template"]["spec"]["containers"][0]["command"][:2] == ["lumen", "merge"]
print(f"{path}: Indexed Job of {spec['completions']} with --shard {shard}, and its merge Job")
