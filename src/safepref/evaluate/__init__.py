"""Evaluation: jailbreak attack success rate and its judges, over-refusal, general capability.

- ``judges``: judges behind one interface (``make_judge(name).judge(prompts, answers) -> [Verdict]``);
- ``jailbreak``: answers to harmful prompts, saved with provenance, then judged (``run_jailbreak``);
- ``refusal_eval``: refusal rate on XSTest's safe prompts, compliance on its unsafe ones (``run_refusal``);
- ``harm_classifier``: the offline harmfulness judge trained on GPTFuzz's labelled answers;
- ``general``: lm-evaluation-harness benchmarks.

Modules import heavy libraries lazily; importing this package is cheap.
"""
