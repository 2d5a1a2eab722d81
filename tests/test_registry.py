"""The registry helper: ``name:arg`` specs, lazy imports, "did you mean", and the registries built on it."""

from __future__ import annotations

import sys

import pytest

from safepref.errors import ConfigError, SafeprefError
from safepref.registry import Registry, Spec, split_spec


@pytest.mark.parametrize(("spec", "expected"), [
    ("keyword", Spec("keyword", None)),
    ("keyword:", Spec("keyword", None)),  # an empty argument is no argument
    (" rubric : gpt-4o ", Spec("rubric", "gpt-4o")),
    ("hf:http://host:8000/model", Spec("hf", "http://host:8000/model")),  # only the first ':' splits
])
def test_split_spec(spec, expected):
    assert split_spec(spec) == expected


def test_create_passes_the_argument_then_the_callers_arguments():
    registry = Registry("thing", {"pair": lambda arg, x, y=0: (arg, x, y)})
    assert registry.create("pair:a", 1, y=2) == ("a", 1, 2)
    assert registry.create("pair", 1) == (None, 1, 0)


def test_a_module_attribute_string_is_imported_only_when_used():
    registry = Registry("thing", {"dumps": "json:dumps", "missing": "no_such_package_xyz.sub:make"})
    assert "no_such_package_xyz" not in sys.modules  # building the registry imported nothing
    assert registry.create("dumps:abc") == '"abc"'  # json.dumps("abc")
    with pytest.raises(SafeprefError, match="thing 'missing' needs a package that is not installed: "
                                            "no_such_package_xyz"):
        registry.create("missing")


def test_an_unknown_name_says_did_you_mean_and_lists_the_known_ones():
    registry = Registry("widget", {"alpha": len, "beta": len})
    with pytest.raises(ConfigError) as info:
        registry.parse("alpah:3")
    assert str(info.value) == "unknown widget 'alpah:3'. Did you mean 'alpha'? Known: alpha, beta"
    with pytest.raises(ConfigError, match=r"^unknown widget 'zzz'\. Known: alpha, beta$"):  # nothing close
        registry.load("zzz")


def test_suffix_known_text_and_describe():
    registry = Registry("kind", {"offline": len}, suffix=":…", help={"offline": "offline:<name>: a saved one"},
                        known=lambda r: f"Known kinds:\n{r.describe()}")
    assert str(registry.unknown("ofline:x")) == ("unknown kind 'ofline:x'. Did you mean 'offline:…'? Known kinds:\n"
                                                 "  offline:<name>: a saved one")


def test_judges_reward_models_and_backends_use_it(monkeypatch, tmp_path):
    from safepref.evaluate import judges
    from safepref.generate import BACKENDS
    from safepref.reward import REWARD_KINDS, load_reward_model

    assert all(isinstance(r, Registry) for r in (judges.JUDGES, REWARD_KINDS, BACKENDS))
    # A new judge: its own module, and one registry line naming its factory (imported on first use).
    (tmp_path / "echo_judge.py").write_text(
        "from safepref.evaluate.judges import KeywordJudge\n\n"
        "def make(arg, settings):\n    return KeywordJudge(arg or settings.phrases)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(judges.JUDGES, "echo", "echo_judge:make")
    assert judges.make_judge("echo:more-is-less-v1").name == "keyword:more-is-less-v1"
    assert judges.make_judge("echo").name == "keyword"  # JudgeSettings().phrases is gcg-v1
    assert judges.check_judge_spec("echo") == "echo"
    with pytest.raises(ConfigError, match="unknown judge 'ech'. Did you mean 'echo'"):
        judges.make_judge("ech")
    assert load_reward_model("length").score(["p", "p"], ["ab", "abcd"]) == [2.0, 4.0]
    with pytest.raises(ConfigError, match=r"unknown reward model 'lenght'\. Did you mean 'length:…'\? Known kinds"):
        load_reward_model("lenght")


def test_sources_and_probe_representations_use_it(tmp_path):
    from safepref.audit.representations import REPRESENTATIONS, SentenceEmbedding, parse_representation
    from safepref.errors import DataError
    from safepref.sources import SOURCES, parse_spec

    assert isinstance(SOURCES, Registry) and isinstance(REPRESENTATIONS, Registry)
    # a source is a record, not a factory: load gives it back
    assert SOURCES.load("advbench").kind == "prompts"
    assert parse_spec("advbench:5").limit == 5
    # an unknown source is a data error (it names data), with the hint and every source listed
    with pytest.raises(DataError, match=r"unknown source 'advbenh'\. Did you mean 'advbench'\? Known sources:\n"
                                        r"(.|\n)*xstest-unsafe") as info:
        parse_spec("advbenh:3")
    assert "or give a path" in str(info.value)
    with pytest.raises(DataError, match="unknown source 'gpt4oo'. Did you mean 'gpt4o'"):
        parse_spec(f"gpt4oo={tmp_path / 'x.jsonl'}")
    # representations: name:argument specs made by one factory per name
    assert [parse_representation(s).spec for s in ("hidden:3", "hidden:", "embed:All-MiniLM-L6-v2", "tfidf")] == [
        "hidden:3", "hidden:auto", "minilm", "tfidf"]
    other = parse_representation("embed:my/folder")
    assert isinstance(other, SentenceEmbedding) and (other.spec, other.model_name) == ("embed:my/folder", "my/folder")
    for spec, message in (("length:3", "length takes no argument"), ("minilm:x", "minilm takes no argument"),
                          ("tfid", "unknown representation 'tfid'. Did you mean 'tfidf'")):
        with pytest.raises(ConfigError, match=message):
            parse_representation(spec)
    assert REPRESENTATIONS.describe().splitlines()[0].startswith("  hidden   hidden:<layer|auto|all>")
