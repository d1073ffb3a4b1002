"""Resolving a run's settings: the recipe's and dataset's defaults, the effective lambda, head options."""

from __future__ import annotations

import logging

import pytest

from clipfit.config import RunConfig, resolve
from clipfit.errors import ConfigError
from clipfit.recipes import RECIPES, head_options


def _resolved(recipe: str, **changes) -> RunConfig:
    cfg = RunConfig()
    cfg.recipe = recipe
    for section, values in changes.items():
        for key, value in values.items():
            setattr(getattr(cfg, section), key, value)
    return resolve(cfg)


@pytest.mark.parametrize("name", list(RECIPES))
def test_the_recorded_lambda_is_the_one_the_loss_has(name):
    # the regulariser acts on the class text features: a recipe that cannot move them has none
    recipe = RECIPES[name]
    asked = _resolved(name, optim={"reg_weight": 8.0}).optim.reg_weight
    assert asked == (8.0 if recipe.changes_text else 0.0)
    default = _resolved(name).optim.reg_weight
    assert default == recipe.defaults.get("reg_weight", 8.0) * (1.0 if recipe.changes_text else 0.0)


def test_clipfit_image_records_no_regulariser_and_says_so_only_when_asked(caplog):
    with caplog.at_level(logging.WARNING, logger="clipfit"):
        assert _resolved("clipfit-image").optim.reg_weight == 0.0
        assert not caplog.records  # the paper's default was never the user's wish
        assert _resolved("clip-adapter", optim={"reg_weight": 8.0}).optim.reg_weight == 0.0
    assert "clip-adapter does not train the text side" in caplog.text


def test_recipe_defaults_come_from_the_record():
    assert _resolved("full").optim.lr == 1e-4 and _resolved("clipfit").optim.lr == 0.002
    assert _resolved("full", optim={"lr": 0.01}).optim.lr == 0.01  # a given value wins


def test_head_options_are_the_recipe_heads_fields_with_defaults_filled():
    assert _resolved("clipfit").head == {}
    assert _resolved("coop").head == {"coop_ctx": 16, "coop_init": None}
    coop = _resolved("coop", head={}).head
    assert coop == resolve(RunConfig.from_dict(_resolved("coop").to_dict())).head  # idempotent
    cfg = RunConfig()
    cfg.recipe, cfg.head = "clip-adapter", {"adapter_ratio": 0.5, "coop_ctx": 4}  # a sweep's shared flags
    assert resolve(cfg).head == {"adapter_ratio": 0.5, "adapter_reduction": 4}


def test_unknown_or_out_of_range_head_options_are_refused():
    cfg = RunConfig()
    cfg.recipe, cfg.head = "coop", {"coop_contexts": 4}
    with pytest.raises(ConfigError, match="unknown head option"):
        resolve(cfg)
    cfg.head = {"coop_ctx": 0}
    with pytest.raises(ConfigError, match="at least one context vector"):
        resolve(cfg)
    cfg.recipe, cfg.head = "clip-adapter", {"adapter_ratio": 1.5}
    with pytest.raises(ConfigError, match=r"ratio in \[0, 1\]"):
        resolve(cfg)


def test_every_head_option_is_a_clipfit_train_flag():
    from clipfit.cli.train import build_parser

    flags = {a.dest for a in build_parser()._actions}
    assert set(head_options()) <= flags


def test_config_files_of_earlier_versions_still_read():
    # config.json written before head options were named after their flags
    old = {"recipe": "coop", "head": {"coop_n_ctx": 8, "coop_init": None, "adapter_ratio": 0.2, "adapter_reduction": 4}}
    assert resolve(RunConfig.from_dict(old)).head == {"coop_ctx": 8, "coop_init": None}


def test_heads_recorded_by_earlier_versions_are_rebuilt():
    from clipfit.heads import AdapterHead, CoOpHead
    from clipfit.trained import recorded_head

    coop = recorded_head({"recipe": "coop", "head": {"kind": "coop", "n_ctx": 4, "init": "a photo of a"}})
    assert coop == CoOpHead(coop_ctx=4, coop_init="a photo of a")
    adapter = recorded_head({"recipe": "clip-adapter", "head": {"kind": "adapter", "ratio": 0.3, "reduction": 2}})
    assert adapter == AdapterHead(adapter_ratio=0.3, adapter_reduction=2)
    assert recorded_head({"recipe": "clipfit", "head": {"kind": "clip"}}).describe() == {"kind": "clip"}


def test_the_training_image_cache_is_a_setting_of_the_run():
    assert RunConfig().data.train_cache == "none"  # views cropped from the full-size images, as Dassl does
    cfg = RunConfig()
    cfg.data.train_cache = "crop-size"
    assert resolve(cfg).data.train_cache == "crop-size"
    cfg.data.train_cache = "224"
    with pytest.raises(ConfigError, match="unknown training-image cache '224'; expected one of none, crop-size"):
        resolve(cfg)
    # config.json of the versions before the option cropped every run's views from the crop-size cache
    old = {"recipe": "clipfit", "data": {"dataset": "shapes", "num_workers": None}}
    assert RunConfig.from_dict(old).data.train_cache == "crop-size"
    assert RunConfig.from_dict(RunConfig().to_dict()).data.train_cache == "none"


@pytest.mark.parametrize(
    ("flags", "source"),
    [
        (["--recipe", "cocoop"], "the recipe's default --coop-init"),
        (["--recipe", "kgcoop"], "the recipe's default --coop-init"),
        (["--recipe", "coop", "--coop-init", "a photo of a"], "(--coop-init)"),
        (["--recipes", "coop", "clipfit", "kgcoop"], "the recipe's default --coop-init"),  # a sweep's shared flag
    ],
)
def test_a_context_count_that_an_init_phrase_would_override_is_refused(flags, source):
    from clipfit.cli.train import build_parser, run_configs

    with pytest.raises(ConfigError, match=r"--coop-ctx 8 has no effect on recipe \w+: .*'a photo of a'") as err:
        run_configs(build_parser().parse_args([*flags, "--coop-ctx", "8"]))
    assert source in str(err.value) and '--coop-init ""' in str(err.value) and "\n" not in str(err.value)


def test_an_init_phrase_alone_or_a_context_count_with_an_empty_phrase_is_accepted():
    from clipfit.cli.train import build_parser, run_configs

    (cfg,) = run_configs(build_parser().parse_args(["--recipe", "cocoop"]))
    assert resolve(cfg).head == {"coop_ctx": 16, "coop_init": "a photo of a"}  # the phrase sets the count at attach
    (cfg,) = run_configs(build_parser().parse_args(["--recipe", "kgcoop", "--coop-ctx", "8", "--coop-init", ""]))
    assert resolve(cfg).head == {"coop_ctx": 8, "coop_init": None}  # 8 random vectors
    configs = run_configs(build_parser().parse_args(["--recipes", "coop", "clip-adapter", "--coop-ctx", "8"]))
    assert [resolve(c).head.get("coop_ctx") for c in configs] == [8, None]
