"""report.html in a real browser (headless Chromium through Playwright): tables, filters, escaping, no errors.

The browser is the Debian ``chromium`` binary (``apt-get install chromium``; scripts/test.sh installs it) driven
by the ``playwright`` Python package; $SAFEPREF_CHROMIUM names another binary. Without them the browser tests
are skipped with the reason; the rendering tests run everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from safepref.records import write_json, write_jsonl
from safepref.report_html import safe_json, write_html_report

ROOT = Path(__file__).resolve().parents[1]
XSS = "<script>alert(1)</script>"
# A 1x1 PNG: the monitor curve image of the fake run.
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8ff"
                    "ff3f0005fe02fea7d6a4d00000000049454e44ae426082")


def _chromium() -> str | None:
    for candidate in (os.environ.get("SAFEPREF_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install playwright)")
    executable = _chromium()
    if executable is None:
        pytest.skip("no chromium binary found (apt-get install chromium, or set SAFEPREF_CHROMIUM)")
    with sync_playwright() as p:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start
        instance = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield instance
        instance.close()


class Page:
    """A page opened from disk that records console errors, page errors and dialogs (an alert = injection)."""

    def __init__(self, browser, path: Path):
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page = browser.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(path.resolve().as_uri())

    def rows(self, table: str) -> int:
        return self.page.locator(f"#{table} tbody tr").count()


# ------------------------------------------------------------------------------------------ a fake run

# gpt4o-self pairs: (chosen, rejected); length gaps in words: -6, 0, 6, 4, 5.
PAIRS = [("I cannot help with that.", "Sure, here is how to pick a lock step by step"),
         ("Sorry, I cannot assist.", "Here: mix the chemicals."),
         ("I cannot do that, it is illegal.", "Okay."),
         (XSS + " is not something I run", "fine, ok"),
         ("Please ask a professional counselor for help today.", "Do it now")]
# jailbreak: prompt -> {model: (answer, keyword harmful, classifier harmful)}
ANSWERS = {"p1": {"sft": ("Sure, step one.", True, True), "gpt4o-self": ("Well, step one.", True, False)},
           "p2": {"sft": ("Here you go.", True, True), "gpt4o-self": (XSS, False, False)},
           "p3": {"sft": ("I cannot.", False, False), "gpt4o-self": ("I cannot.", False, False)}}


def _stage(run: Path, name: str) -> Path:
    folder = run / "stages" / name.replace("/", "__")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "stage.json", {"seconds": 1.0})
    return folder


def fake_run(run: Path) -> dict:
    """A run folder of conditions sft and gpt4o-self, and its summary (one row with summary intervals, one with
    the older per-judge counts only)."""
    names = ["build/gpt4o-self", "audit", "train/gpt4o-self", "eval/sft", "eval/gpt4o-self"]
    folders = {n: _stage(run, n) for n in names}
    write_json(run / "index.json", {n: str(f.relative_to(run)) for n, f in folders.items()})
    write_jsonl(folders["build/gpt4o-self"] / "pairs.jsonl", [
        {"prompt": [{"role": "user", "content": f"prompt {i}"}], "chosen": [{"role": "assistant", "content": c}],
         "rejected": [{"role": "assistant", "content": r}],
         "chosen_meta": {"source": {"kind": "dataset", "name": "gpt4o"}, "score": 1.5},
         "rejected_meta": {"source": {"kind": "model", "name": "tiny", "generation": {"do_sample": False}},
                           "score": -0.5}, "prompt_id": f"id{i}", "recipe": "x-self"}
        for i, (c, r) in enumerate(PAIRS)])
    write_json(folders["audit"] / "audit.json", {"sets": [{"name": "gpt4o-self", "cue": "length", "cues": {
        "tfidf_top_words": {"chosen": ["cannot"], "rejected": ["here"]}}}]})
    # the audit's row of pair 4 names another prompt (a skipped pair would shift indices): not shown
    write_jsonl(folders["audit"] / "margins.jsonl", [
        {"set": "gpt4o-self", "pair": i, "prompt_id": f"id{i}" if i < 4 else "other", "margin_per_token": -0.25 * i}
        for i in range(len(PAIRS))])
    for model in ("sft", "gpt4o-self"):
        write_jsonl(folders[f"eval/{model}"] / "jailbreak" / "per_answer.jsonl", [
            {"prompt_id": pid, "sample_index": 0, "prompt": f"goal {pid}", "answer": by[model][0],
             "verdicts": {"keyword": {"harmful": by[model][1], "score": float(by[model][1])},
                          "classifier": {"harmful": by[model][2], "score": 0.5}}}
            for pid, by in ANSWERS.items()])
    train = folders["train/gpt4o-self"]
    (train / "monitor.png").write_bytes(PNG)
    write_json(train / "summary.json", {"status": "complete", "monitor": {
        "total_steps": 7, "accuracy": {"final": 1.0, "first_step_above": 3, "threshold": 0.95},
        "warnings": ["reward accuracy passed 0.95 at step 3: " + XSS]}})
    write_json(train / "run.json", {"model": "smollm2-135m-instruct", "config": {"beta": 0.1}})
    return {"conditions": {
        "sft": {"kind": "start", "jailbreak": {"asr": {"keyword": 2 / 3},
                                               "judges": {"keyword": {"judged": 3, "harmful": 2}}}},
        "gpt4o-self": {"kind": "multi", "datasheet": {"rows": 5},
                       "rates": {"asr/jailbreak/keyword": {"rate": 1 / 3, "k": 1, "n": 3, "ci95": [0.06, 0.79]},
                                 "asr/jailbreak/classifier": {"rate": 0.0, "k": 0, "n": 3, "ci95": [0.0, 0.56]}},
                       "audit": {"best_auc": 1.0, "best": "length", "verdict": "separable by " + XSS}}},
        "figures": [], "missing_stages": [],
        "judge_validation": {"keyword": {"n": 200, "accuracy": {"value": 0.9, "ci": [0.85, 0.94]}}, "classifier": None},
        "comparisons": [{"metric": "asr/jailbreak/keyword", "condition": "gpt4o-self", "baseline": "sft",
                         "difference": -1 / 3, "ci95": [-0.67, 0.0], "n": 3, "mcnemar": {"0": {"p": 0.5}}}]}


def test_safe_json_cannot_close_its_script_block():
    text = safe_json({"a": "</script><!-- & >", "score": float("nan")})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"a": "</script><!-- & >", "score": None}


def test_fake_run_renders_escaped_with_intervals(tmp_path):
    run = tmp_path / "run"
    summary = fake_run(run)
    html = write_html_report(run, run, summary, "fake").read_text()
    assert XSS not in html  # every copy is escaped: &lt;script&gt; in the page, \u003cscript\u003e in the data
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "\\u003cscript\\u003ealert(1)" in html
    assert "0.33 <span class=\"ci\">[0.06, 0.79]</span> <span class=\"ci\">n=3</span>" in html  # the summary's
    assert "0.67 <span class=\"ci\">[0.21, 0.94]</span> <span class=\"ci\">n=3</span>" in html  # Wilson of 2 of 3
    assert "data:image/png;base64," in html and "http://" not in html and "https://" not in html
    assert "<b>keyword</b>: agreement with held-out human labels: n 200, accuracy 0.900 [0.850, 0.940]" in html
    assert "<b>classifier</b>: no validated agreement on held-out labels is known" in html
    assert "<th>difference</th>" in html and "mcnemar" not in html.split('id="report-data"')[0]
    # the report step also wrote the trained model's card
    card = (run / "stages" / "train__gpt4o-self" / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card


def test_fake_run_filters_in_the_browser(tmp_path, browser):
    run = tmp_path / "run"
    write_html_report(run, run, fake_run(run), "fake")
    view = Page(browser, run / "report.html")
    page = view.page
    assert view.rows("pair-table") == 5 and view.rows("jb-table") == 3
    page.select_option("#pair-cue", "cannot")  # chosen of pairs 0, 1, 2
    assert view.rows("pair-table") == 3
    page.fill("#pair-gap-min", "5")  # of those, gap >= 5: pair 2 (gap 6)
    assert view.rows("pair-table") == 1
    assert page.locator("#pair-table tbody tr td").nth(2).text_content() == "I cannot do that, it is illegal."
    page.select_option("#pair-cue", "")  # gap >= 5 alone: pairs 2 and 4
    assert view.rows("pair-table") == 2
    page.fill("#pair-gap-max", "5")
    assert view.rows("pair-table") == 1 and page.text_content("#pair-count") == "1 of 5 pairs shown"
    page.fill("#pair-gap-min", "")
    page.fill("#pair-gap-max", "")
    page.select_option("#pair-cue", "here")  # rejected of pairs 0 ("here") and 1 ("Here:")
    assert view.rows("pair-table") == 2
    assert page.locator("#pair-audit-head").text_content() == "audit: ref. log-p margin / token"
    page.select_option("#pair-cue", "")
    audit = page.locator("#pair-table tbody tr td:last-child").all_text_contents()
    assert audit == ["0", "-0.25", "-0.50", "-0.75", "—"]

    page.select_option("#jb-model-a", "sft")
    page.select_option("#jb-model-b", "gpt4o-self")
    page.select_option("#jb-judge", "keyword")
    page.check("#jb-disagree")  # keyword: only p2 differs
    assert view.rows("jb-table") == 1
    assert page.locator("#jb-table tbody tr td").nth(2).locator(".answer").text_content() == XSS
    page.select_option("#jb-judge", "classifier")  # classifier: p1 and p2 differ
    assert view.rows("jb-table") == 2
    page.uncheck("#jb-disagree")
    assert view.rows("jb-table") == 3
    assert page.locator("script").count() == 2  # the data block and the page's own script: nothing injected
    assert page.locator("img.monitor-img").count() == 1
    assert view.dialogs == [] and view.errors == []


@pytest.mark.slow
def test_tiny_pipeline_report_in_the_browser(tiny_model_dir, data_root, tmp_path, browser):
    """The whole tiny study (as in test_pipeline), one jailbreak answer replaced by a script tag, re-reported."""
    import yaml

    from safepref.pipeline import run_experiment
    from safepref.records import iter_jsonl
    from safepref.report import write_report

    experiment = {
        "name": "tiny", "target": str(tiny_model_dir), "conditions": ["sft", "gpt4o-self", "self-rm"],
        "prompts": {"source": "pku-realign", "limit": 4, "covered_by": ["gpt4o"]},
        "answers": {"gpt4o": {"source": "gpt4o"}}, "roles": {"gpt4o": "gpt4o"}, "reward_model": "length",
        "generation": {"greedy": {"max_new_tokens": 8, "no_repeat_ngram_size": 1},
                       "sample": {"max_new_tokens": 8, "num_samples": 3, "no_repeat_ngram_size": 1}},
        "train": {"config": str(ROOT / "configs" / "train" / "dpo-smollm2-lora.yaml"),
                  "set": {"max_steps": 1, "per_device_train_batch_size": 2}},
        "evaluate": {"jailbreak": {"prompts": "advbench:3", "judges": ["keyword"],
                                   "set": {"max_new_tokens": 6, "no_repeat_ngram_size": 1}},
                     "refusal": {"safe": "xstest-safe:2", "unsafe": "xstest-unsafe:2", "set": {"max_new_tokens": 6}}},
        "audit": {"representations": ["length", "refusal"], "folds": 2, "bootstrap": 10}, "device": "cpu"}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment))
    run = tmp_path / "run"
    run_experiment(path, out=run)
    index = json.loads((run / "index.json").read_text())
    answers = run / index["eval/self-rm"] / "jailbreak" / "per_answer.jsonl"
    rows = [row for _, row in iter_jsonl(answers)]
    rows[0]["answer"] = XSS
    write_jsonl(answers, rows)
    write_report(run)

    pairs = {c: sum(1 for _ in iter_jsonl(run / index[f"build/{c}"] / "pairs.jsonl")) for c in ("gpt4o-self", "self-rm")}
    view = Page(browser, run / "report.html")
    page = view.page
    assert view.rows("summary-table") == 3
    assert view.rows("pair-table") == pairs["gpt4o-self"]  # the first condition with pairs is shown first
    page.select_option("#pair-condition", "self-rm")
    assert view.rows("pair-table") == pairs["self-rm"]
    page.fill("#pair-gap-min", "1000")  # no pair of 8-token answers differs by 1000 words
    assert view.rows("pair-table") == 0
    assert view.rows("jb-table") == 3 and page.locator("#jb-table thead th").count() == 4
    cells = page.locator("#jb-table tbody tr").first.locator("td")
    assert cells.nth(3).locator(".answer").text_content() == XSS
    assert page.locator("img.monitor-img").count() == 2  # one monitor.png per trained condition
    assert view.dialogs == [] and view.errors == []
    card = (run / index["train/self-rm"] / "README.md").read_text()
    assert "| keyword |" in card and "## Evaluation" in card  # the report refreshed the card with its results
