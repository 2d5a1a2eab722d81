"""`safepref export`: a preference set as Parquet + dataset card that `datasets` loads and `safepref train` trains on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from safepref.cli import main
from safepref.datasheet import build_datasheet, write_datasheet
from safepref.export import hub_license, licenses_of, size_category
from safepref.records import PreferencePair, write_json, write_jsonl

GENERATION = {"do_sample": False, "max_new_tokens": 12, "temperature": 0.5}


def _pair(i: int) -> PreferencePair:
    return PreferencePair(
        prompt=[{"role": "user", "content": f"How do I pick lock number {i}?"}],
        chosen=[{"role": "assistant", "content": "I'm sorry, but I cannot help with that request."}],
        rejected=[{"role": "assistant", "content": f"Sure, here is how: step {i}, then step {i + 1}."}],
        chosen_meta={"source": {"kind": "dataset", "name": "gpt4o", "model": "gpt-4o"}, "sample_index": 0,
                     "score": 2.0 + i, "role": "chosen", "rm": "length"},
        rejected_meta={"source": {"kind": "model", "name": "tiny", "backend": "hf", "generation": GENERATION},
                       "sample_index": 0, "score": float(i), "role": "self", "rm": "length"},
        recipe="gpt4o-self")


@pytest.fixture()
def set_dir(tmp_path) -> Path:
    """A `safepref build`-style folder (6 pairs, datasheet, summary) and an audit naming its pairs file."""
    folder = tmp_path / "stages" / "build__gpt4o-self-abc"
    pairs = [_pair(i) for i in range(6)]
    write_jsonl(folder / "pairs.jsonl", pairs)
    write_datasheet(folder, build_datasheet(pairs, recipe="x-self", condition="gpt4o-self",
                                            extra={"paper": {"label": "GPT4o+Self", "chosen": "GPT-4o answer",
                                                             "rejected": "target model's greedy answer"}}))
    write_json(folder / "summary.json", {"command": "safepref build gpt4o-self --chosen gpt4o ..."})
    write_json(tmp_path / "stages" / "audit-x" / "audit.json", {"sets": [
        {"name": "other", "source": "/elsewhere/pairs.jsonl", "verdict": "not this one", "representations": []},
        {"name": "gpt4o-self", "source": str(folder / "pairs.jsonl"), "level": "highly separable", "cue": "length",
         "verdict": "gpt4o-self: chosen and rejected are highly separable (length alone: AUC 1.00).",
         "representations": [{"spec": "length", "best": {"auc": 1.0}}, {"spec": "tfidf", "best": {"auc": 0.75}}]},
    ]})
    return folder


def _card(path: Path) -> tuple[dict, str]:
    text = path.read_text()
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def test_licenses_and_size_category():
    assert size_category(999) == "n<1K" and size_category(1000) == "1K<n<10K" and size_category(10**5) == "100K<n<1M"
    sheet = {"sources": {"chosen": {"pku-realign": 3}, "rejected": {"smollm2 (greedy)": 3}}}
    assert licenses_of(sheet) == {"pku-realign": "cc-by-nc-4.0",
                                  "smollm2 (greedy)": "model output: the generating model's license and terms"}
    assert hub_license(licenses_of(sheet)) == "cc-by-nc-4.0"  # model outputs follow the data license
    sheet["sources"]["chosen"] = {"gpt4o": 2, "hh-harmless": 1}
    assert hub_license(licenses_of(sheet)) == "other"  # OpenAI terms beside MIT: no single license id


def test_export_loads_with_datasets_and_carries_card(set_dir, tmp_path, capsys):
    out = tmp_path / "share"
    assert main(["export", str(set_dir), "--out", str(out), "--audit", str(tmp_path / "stages" / "audit-x")]) == 0
    assert "wrote 6 pairs" in capsys.readouterr().out

    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert ds.num_rows == 6
    assert {"prompt", "chosen", "rejected", "prompt_id", "recipe", "chosen_meta", "rejected_meta", "chosen_source",
            "rejected_source", "chosen_score", "rejected_score"} <= set(ds.column_names)
    row = ds[2]
    assert row["prompt"] == [{"role": "user", "content": "How do I pick lock number 2?"}]
    assert row["rejected"] == [{"role": "assistant", "content": "Sure, here is how: step 2, then step 3."}]
    assert row["chosen_source"] == "gpt4o" and row["rejected_source"] == "tiny (greedy)"
    assert (row["chosen_score"], row["rejected_score"]) == (4.0, 2.0)
    assert row["rejected_meta"]["source"]["generation"]["max_new_tokens"] == 12

    meta, body = _card(out / "README.md")
    assert meta["license"] == "other" and "gpt4o: other (OpenAI terms of use)" in meta["license_details"]
    assert meta["size_categories"] == ["n<1K"] and "gpt4o-self" in meta["tags"]
    assert meta["configs"][0]["data_files"][0]["path"] == "data/train-*"
    assert "the study's condition GPT4o+Self" in body and "safepref build gpt4o-self" in body
    assert "Level: **highly separable**; best probe AUC 1.00 (length); main cue: length." in body
    assert "(length alone: AUC 1.00)" in body and "not this one" not in body
    assert json.loads((out / "datasheet.json").read_text())["rows"] == 6

    # Exporting again needs --overwrite, and never replaces a folder that is not an export.
    assert main(["export", str(set_dir), "--out", str(out)]) == 1
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(set_dir), "--out", str(out), "--overwrite", "--name", "renamed"]) == 0
    assert _card(out / "README.md")[0]["pretty_name"] == "renamed"
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(["export", str(set_dir), "--out", str(other), "--overwrite"]) == 1
    assert (other / "notes.txt").read_text() == "keep me"


def test_push_to_hub_uploads_the_folder_with_the_env_token(set_dir, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, repo, **kw: calls.append(("create", repo, kw["repo_type"], self.token)))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder",
                        lambda self, **kw: calls.append(("upload", kw["repo_id"], kw["folder_path"])))
    out = tmp_path / "share"
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert main(["export", str(set_dir), "--out", str(out), "--push-to-hub", "me/set"]) == 1
    assert "set the environment variable HF_TOKEN" in capsys.readouterr().err and calls == []

    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    assert main(["export", str(set_dir), "--out", str(out), "--overwrite", "--push-to-hub", "me/set"]) == 0
    printed = capsys.readouterr()
    assert "pushed to https://huggingface.co/datasets/me/set" in printed.out
    assert "hf_secret_value" not in printed.out + printed.err
    assert calls == [("create", "me/set", "dataset", "hf_secret_value"), ("upload", "me/set", str(out))]

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline: refused before any upload
    assert main(["export", str(set_dir), "--out", str(out), "--overwrite", "--push-to-hub", "me/set"]) == 1
    assert "HF_HUB_OFFLINE=1" in capsys.readouterr().err and len(calls) == 2


def test_export_trains_with_safepref_train_and_gets_a_model_card(set_dir, tmp_path, tiny_model_dir):
    out = tmp_path / "share"
    assert main(["export", str(set_dir), "--out", str(out)]) == 0
    model = tmp_path / "model"
    argv = ["train", "--pairs", str(out / "data" / "train-00000-of-00001.parquet"), "--model", str(tiny_model_dir),
            "--out", str(model), "--set", "finetune=lora", "--set", "max_steps=1", "--set",
            "per_device_train_batch_size=2", "--set", "max_length=128", "--set", "monitor.probe_pairs=4"]
    assert main(argv) == 0
    summary = json.loads((model / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["pairs"]["trained"] == 6
    meta, body = _card(model / "README.md")
    assert "base_model" not in meta  # a local folder is no hub id
    assert meta["license"] == "unknown" and "gpt4o-self" in meta["tags"]  # the datasheet beside the export
    assert "6 pairs trained of 6 read" in body and "| max_steps | 1 |" in body
    assert "chosen from: gpt4o (6)" in body and "Not evaluated yet" in body
