"""A preference set as a Hugging Face dataset: Parquet that ``datasets`` and TRL read, and a dataset card.

    from safepref.export import ExportConfig, export_preference_set
    export_preference_set(ExportConfig(pairs_dir="runs/x/stages/build__self-rm-<hash>", out="share/self-rm",
                                       audit="runs/x/stages/audit-<hash>"))

Output folder (the hub's dataset layout; ``--push-to-hub`` uploads it as it is)::

    data/train-00000-of-00001.parquet   one row per pair: prompt / chosen / rejected as message lists (TRL's
                                        conversational format), chosen_meta / rejected_meta (each side's
                                        provenance, as in pairs.jsonl), prompt_id, recipe, and flat copies for
                                        browsing: chosen_source, rejected_source, chosen_score, rejected_score
    README.md                           dataset card: YAML metadata (license from the sources, size category,
                                        tags, data files), how the set was built, its datasheet, the audit's verdict
    datasheet.json                      the build's datasheet, unchanged

Read it back with ``datasets.load_dataset("parquet", data_files="FOLDER/data/*.parquet", split="train")`` or
train on it with ``safepref train --pairs FOLDER/data/train-00000-of-00001.parquet``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from safepref.config import field, require
from safepref.datasheet import build_datasheet, datasheet_markdown, side_label
from safepref.errors import ConfigError, DataError, SafeprefError
from safepref.records import PreferencePair, read_pairs, to_dict, write_text

DATA_FILE = "data/train-00000-of-00001.parquet"

# Licenses of the registered data sources (hub identifiers), from ../shared/data/README.md and each source's
# repository. Model-generated sides carry the generating model's terms instead (named in the card).
SOURCE_LICENSES: dict[str, str] = {
    "pku-saferlhf": "cc-by-nc-4.0", "pku-paper": "cc-by-nc-4.0", "pku-realign": "cc-by-nc-4.0",
    "pku-safe-sft": "cc-by-nc-4.0", "gpt35-safety": "cc-by-nc-4.0", "gpt4o": "other (OpenAI terms of use)",
    "hh-harmless": "mit", "advbench": "mit", "harmbench": "mit", "xstest": "cc-by-4.0",
    "xstest-safe": "cc-by-4.0", "xstest-unsafe": "cc-by-4.0", "donotanswer": "apache-2.0",
}
# The hub's size_categories buckets (upper bounds, exclusive).
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"))


@dataclass
class ExportConfig:
    pairs_dir: str = field(help="a preference-set folder written by `safepref build` (pairs.jsonl, datasheet.json)"
                                " or a pairs JSONL file")
    out: str | None = field(None, help="output folder, in the hub's dataset layout (required for a preference set)")
    audit: str | None = field(None, help="audit.json or the audit folder: its verdict on this set goes on the card")
    audit_set: str | None = field(None, help="name of this set in the audit (default: matched by its pairs file, "
                                             "else the datasheet's condition)")
    name: str | None = field(None, help="dataset name for the card's title (default: the condition or folder)")
    push_to_hub: str | None = field(None, help="upload to this hub repository, owner/name (a dataset; a model for "
                                                "model folders); needs network and the token")
    private: bool = field(False, help="create the hub repository as private")
    token_env: str = field("HF_TOKEN", help="environment variable holding the hub token")
    overwrite: bool = field(False, help="replace an existing export in `out`")

    def __post_init__(self) -> None:
        require(bool(self.out), "out", "an output folder is needed (--out)")
        if self.push_to_hub is not None:
            require(self.push_to_hub.count("/") == 1, "push_to_hub", "must look like owner/name")


def size_category(rows: int) -> str:
    for bound, label in SIZE_CATEGORIES:
        if rows < bound:
            return label
    return "n>10M"


def _pairs_file(path: Path) -> Path:
    if path.is_dir():
        path = path / "pairs.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: no such preference-pair file (give a `safepref build` folder or pairs.jsonl)")
    return path


def dataset_rows(pairs: list[PreferencePair]) -> list[dict[str, Any]]:
    """One Parquet row per pair: the pair record as in pairs.jsonl plus flat provenance columns."""
    rows = []
    for pair in pairs:
        row = to_dict(pair)
        row["chosen_source"] = side_label(pair.chosen_meta)
        row["rejected_source"] = side_label(pair.rejected_meta)
        row["chosen_score"] = pair.chosen_meta.get("score")
        row["rejected_score"] = pair.rejected_meta.get("score")
        rows.append(row)
    return rows


def licenses_of(sheet: dict[str, Any]) -> dict[str, str]:
    """Source label -> license for every side of the set; model outputs are named as such."""
    labels = {label for side in ("chosen", "rejected") for label in ((sheet.get("sources") or {}).get(side) or {})}
    out = {}
    for label in sorted(labels):
        out[label] = SOURCE_LICENSES.get(label, "model output: the generating model's license and terms")
    return out


def hub_license(licenses: dict[str, str]) -> str:
    """One hub license id: the data sources' license when they share one, else ``other``."""
    known = {v for v in licenses.values() if not v.startswith(("other", "model output"))}
    unknown = [v for v in licenses.values() if v.startswith(("other", "model output"))]
    if len(known) == 1 and not any(v.startswith("other") for v in unknown):
        return known.pop()  # model outputs follow the data license in the absence of their own terms
    return "other" if licenses else "unknown"


def find_audit(audit: str | Path, pairs_file: Path, set_name: str | None, condition: str | None
               ) -> dict[str, Any] | None:
    """This set's entry in an audit.json: by name, by its pairs file, or by the datasheet's condition."""
    path = Path(audit)
    if path.is_dir():
        path = path / "audit.json"
    if not path.is_file():
        raise DataError(f"{path}: no audit.json here (give the file or a `safepref audit` folder)")
    try:
        sets = json.loads(path.read_text()).get("sets") or []
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    by_name = {s.get("name"): s for s in sets}
    if set_name is not None:
        if set_name not in by_name:
            raise DataError(f"{path}: no set named '{set_name}' (sets: {', '.join(map(str, by_name))})")
        return by_name[set_name]
    for entry in sets:  # the pipeline's audit names the build folder's pairs.jsonl (maybe since moved)
        source = Path(str(entry.get("source", "")))
        if source == pairs_file or (source.name == pairs_file.name and source.parent.name == pairs_file.parent.name):
            return entry
    return by_name.get(condition) if condition else None


def audit_summary(entry: dict[str, Any]) -> dict[str, Any]:
    best = [(r["best"]["auc"], r["spec"]) for r in entry.get("representations", []) if r.get("best")]
    auc, spec = max(best) if best else (None, None)
    return {"verdict": entry.get("verdict"), "level": entry.get("level"), "cue": entry.get("cue"),
            "best_representation": spec, "best_auc": auc}


def _front_matter(meta: dict[str, Any]) -> str:
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def dataset_card(sheet: dict[str, Any], build: dict[str, Any], audit: dict[str, Any] | None, title: str) -> str:
    """README.md of the exported set: hub YAML metadata, then how it was built, its datasheet, the audit."""
    licenses = licenses_of(sheet)
    license_id = hub_license(licenses)
    meta: dict[str, Any] = {
        "license": license_id,
        "language": ["en"],
        "size_categories": [size_category(int(sheet.get("rows") or 0))],
        "task_categories": ["text-generation"],
        "tags": ["dpo", "preference", "safety", "safepref"] + ([sheet["condition"]] if sheet.get("condition") else []),
        "pretty_name": title,
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
    }
    if license_id == "other":
        meta["license_name"] = "mixed"
        meta["license_details"] = "; ".join(f"{k}: {v}" for k, v in licenses.items())
    paper = sheet.get("paper") or {}
    lines = [_front_matter(meta), f"# {title}", "",
             f"A DPO preference set built with safepref (recipe `{sheet.get('recipe')}`"
             + (f", the study's condition {paper['label']}" if paper.get("label") else "") + "). "
             f"{sheet.get('rows')} pairs on {sheet.get('prompts')} prompts.", ""]
    if paper:
        lines += [f"- chosen: {paper.get('chosen')}", f"- rejected: {paper.get('rejected')}", ""]
    lines += ["## Loading", "", "```python", "from datasets import load_dataset",
              'ds = load_dataset("parquet", data_files="data/*.parquet", split="train")  # or the hub repo id',
              "```", "",
              "`prompt`, `chosen`, `rejected` are message lists (TRL's conversational preference format); "
              "`chosen_meta` / `rejected_meta` hold where each side came from (dataset, or model and generation "
              "settings) and its reward score; `chosen_source`, `rejected_source`, `chosen_score`, "
              "`rejected_score` are flat copies for browsing.", "",
              "## Licenses of the sources", "", "| source | license |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in licenses.items()]
    lines += ["", "## How it was built", ""]
    if build.get("command"):
        lines += ["```", str(build["command"]), "```", ""]
    inputs = sheet.get("inputs") or {}
    lines += [f"- {k}: `{(v or {}).get('label', v)}`" for k, v in inputs.items()]
    reward = sheet.get("reward") or {}
    if reward.get("rm"):
        lines.append(f"- reward model: {', '.join(reward['rm'])}")
    lines += ["", "## Datasheet", "", datasheet_markdown(sheet).replace("# Datasheet", "### Datasheet", 1)]
    lines += ["## Separability audit", ""]
    if audit:
        best = f"{audit['best_auc']:.2f} ({audit['best_representation']})" if audit.get("best_auc") is not None else "–"
        lines += [f"Level: **{audit.get('level') or '–'}**; best probe AUC {best}; main cue: {audit.get('cue') or '–'}.",
                  "", str(audit.get("verdict") or ""), ""]
    else:
        lines += ["Not audited here (run `safepref audit` and export with `--audit`).", ""]
    return "\n".join(lines)


def export_preference_set(config: ExportConfig) -> dict[str, Any]:
    """Write the set into ``config.out`` (Parquet, card, datasheet) and push it when asked; returns a summary.

    Raises DataError (no pairs, bad audit), SafeprefError (``out`` holds something else and no ``overwrite``;
    push without a token or network)."""
    pairs_file = _pairs_file(Path(config.pairs_dir))
    pairs = read_pairs(pairs_file)
    folder = pairs_file.parent
    sheet_file = folder / "datasheet.json"
    sheet = json.loads(sheet_file.read_text()) if sheet_file.exists() else build_datasheet(
        pairs, recipe=pairs[0].recipe or "unknown", extra={"note": "datasheet computed at export (whitespace words)"})
    build = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").exists() else {}
    audit = None
    if config.audit:
        entry = find_audit(config.audit, pairs_file, config.audit_set, sheet.get("condition"))
        if entry is None:
            raise DataError(f"{config.audit}: no audited set matches {pairs_file} (name it with --audit-set)")
        audit = audit_summary(entry)
    out = Path(config.out)
    if out.exists() and any(out.iterdir()):
        if not config.overwrite:
            raise SafeprefError(f"{out} is not empty: pass --overwrite to replace it")
        if not (out / "README.md").exists() or not (out / DATA_FILE).exists():
            raise SafeprefError(f"{out} holds something other than an export: refusing to replace it")
        shutil.rmtree(out)  # only an earlier export (README.md + data file) is ever deleted
    title = config.name or sheet.get("condition") or folder.name
    _write_parquet(dataset_rows(pairs), out / DATA_FILE)
    from safepref.records import write_json

    write_json(out / "datasheet.json", sheet)
    write_text(out / "README.md", dataset_card(sheet, build, audit, title))
    summary = {"out": str(out), "rows": len(pairs), "data_file": DATA_FILE, "license": hub_license(licenses_of(sheet)),
               "audit": audit}
    if config.push_to_hub:
        summary["pushed"] = push_folder(out, config.push_to_hub, "dataset", config.private, config.token_env)
    return summary


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    """Parquet through ``datasets`` (its schema is what load_dataset reads back), written atomically."""
    import pyarrow as pa
    from datasets import Dataset

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        Dataset.from_list(rows).to_parquet(str(tmp))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"provenance fields of mixed types cannot be stored as Parquet: {exc}") from None
    os.replace(tmp, path)


def push_folder(folder: Path, repo: str, repo_type: str, private: bool, token_env: str) -> str:
    """Upload ``folder`` to a hub repository; the token comes from ``$token_env`` only. Returns the URL."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise SafeprefError("cannot push: HF_HUB_OFFLINE=1 (no network); unset it on a machine with network")
    token = os.environ.get(token_env)
    if not token:
        raise ConfigError(f"cannot push: set the environment variable {token_env} to a hub token with write access")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo, repo_type=repo_type, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type=repo_type,
                          commit_message="safepref export")
    except Exception as exc:  # network and permission errors arrive as many types; never echo the token
        raise SafeprefError(f"push to {repo} failed: {type(exc).__name__}: {str(exc)[:200]}") from None
    return f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo}"
