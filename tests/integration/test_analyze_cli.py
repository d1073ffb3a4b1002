"""clipfit-analyze in-process on a tiny shapes run: the files, their columns, the report, and bad input."""

from __future__ import annotations

import base64
import json
import shutil
import warnings
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from analysis import schemas
from analysis.cli import main
from clipfit.rundir import load_checkpoint
from tests.report_checks import assert_one_type_scale

pytestmark = pytest.mark.slow  # every test reads runs trained for it

# The runs of this file: the suite's tiny run (see tiny_argv) without warm-up, at lr 0.05, logged every step.
FLAGS = {"warmup_epochs": 0, "lr": 0.05, "log_every": 1}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, train_tiny, shared_tiny_weights) -> tuple[Path, str]:
    """A finished 3-epoch ClipFit run of clipfit-tiny on 2 shots of the shapes world; (run dir, weights).

    It lies at <root>/shapes/base2new/clipfit/shots2/seed1, and <root> holds nothing else (``results``
    reads every run under it). The analyses only read it.
    """
    run_dir = tmp_path_factory.mktemp("analyze") / "runs" / "shapes" / "base2new" / "clipfit" / "shots2" / "seed1"
    return train_tiny(run_dir, **FLAGS)[0], shared_tiny_weights


@pytest.fixture(scope="module")
def lambda_pair(tmp_path_factory, train_tiny) -> tuple[Path, Path]:
    """Two runs that differ only in the regulariser weight: (λ = 8, λ = 0), the pair of paper Fig. 4 right."""
    root = tmp_path_factory.mktemp("ablation")
    return tuple(train_tiny(root / f"lambda{w}", "--reg-weight", w, **FLAGS)[0] for w in ("8", "0"))


@pytest.fixture(scope="module")
def seed2_run(tmp_path_factory, train_tiny) -> Path:
    """tiny_run's configuration with seed 2: with tiny_run, two seeds of one configuration."""
    return train_tiny(tmp_path_factory.mktemp("seeds") / "seed2", "--seed", "2", **FLAGS)[0]


def _columns(path: Path) -> list[str]:
    return list(pd.read_csv(path, nrows=0).columns)


def _figure_files(out: Path, stem: str) -> None:
    for suffix in (".csv", ".png", ".svg", ".json"):
        assert (out / f"{stem}{suffix}").is_file(), f"{stem}{suffix} missing"
    assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (out / f"{stem}.svg").read_bytes()[:2000]


def test_param_change(tiny_run, tmp_path, capsys):
    run_dir, _ = tiny_run
    out = tmp_path / "pc"
    assert main(["param-change", str(run_dir), str(run_dir), "--labels", "run", "copy", "--out", str(out)]) == 0
    _figure_files(out, "param_change")
    _figure_files(out, "param_change_steps")
    assert _columns(out / "param_change.csv") == list(schemas.PARAM_CHANGE)
    assert _columns(out / "param_change_steps.csv") == list(schemas.PARAM_STEPS)
    table = pd.read_csv(out / "param_change.csv")
    assert list(table["checkpoint"].unique()) == ["run", "copy"] and len(table) == 2 * 14
    assert (table["sq_change"] > 0).all()  # every trained tensor moved
    sidecar = json.loads((out / "param_change.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    assert sidecar["signature"] == results["signature"]
    assert sidecar["command"].startswith("clipfit-analyze param-change ") and sidecar["versions"]["clipfit"]
    printed = capsys.readouterr().out
    assert f"Per-layer parameter change (paper Fig. 3), checkpoints side by side: {out / 'param_change.png'}" in printed


def test_param_change_with_and_without_the_regulariser(lambda_pair, tmp_path, capsys):
    # paper Fig. 4 right: the same run trained with λ = 8 and λ = 0, everything else equal
    with_reg, without_reg = lambda_pair
    for run, weight in ((with_reg, 8.0), (without_reg, 0.0)):  # what each run recorded
        assert json.loads((run / "config.json").read_text())["config"]["optim"]["reg_weight"] == weight
        assert json.loads((run / "results.json").read_text())["reg_weight"] == weight
    out = tmp_path / "pc"
    assert main(["param-change", str(with_reg), str(without_reg), "--out", str(out)]) == 0
    title = "Per-layer parameter change with different regulariser weights (paper Fig. 4 right)"
    assert f"{title}: {out / 'param_change.png'}" in capsys.readouterr().out
    table = pd.read_csv(out / "param_change.csv")
    assert list(table["checkpoint"].unique()) == ["λ=8", "λ=0"]  # labels read from the runs' records, not given
    change = table.pivot(index="name", columns="checkpoint", values="sq_change")
    assert len(change) == 14 and (change > 0).all().all()
    assert (change["λ=8"] - change["λ=0"]).abs().gt(1e-12).all()  # every tensor took another path
    # the regulariser holds the text features near t0: the text biases move less in total with λ = 8
    # (on this seeded run 0.021 against 0.028; the image LayerNorms barely differ)
    text = table[table["tower"] == "text"].groupby("checkpoint")["sq_change"].sum()
    assert text["λ=8"] < text["λ=0"]
    # on one scale, per layer group: the configurations are named by what differs (λ, read from the runs' records)
    groups = pd.read_csv(out / "param_change_groups.csv")
    assert _columns(out / "param_change_groups.csv") == list(schemas.PARAM_GROUPS)
    own = groups[groups["level"] == "group"].set_index(["configuration", "group"])
    assert set(own.index.get_level_values(0)) == {"clipfit λ=8", "clipfit λ=0"}
    for config, checkpoint in (("clipfit λ=8", "λ=8"), ("clipfit λ=0", "λ=0")):
        for group, part in table[table["checkpoint"] == checkpoint].groupby("group"):
            row = own.loc[(config, group)]  # one run each: the group's sum, and that per value
            assert row["sq_change_mean"] == pytest.approx(part["sq_change"].sum())
            assert row["per_value_mean"] == pytest.approx(part["sq_change"].sum() / part["numel"].sum())
    text_group = own.xs("text FFN-out bias", level="group")["per_value_mean"]
    assert text_group["clipfit λ=8"] < text_group["clipfit λ=0"]


def test_seeds_of_one_configuration_are_averaged_beside_another_configuration(
    tiny_run, seed2_run, lambda_pair, tmp_path, capsys
):
    # seeds 1 and 2 of λ = 8, and λ = 0: two configurations that differ only in λ (paper Fig. 4 right)
    runs = [tiny_run[0], seed2_run, lambda_pair[1]]
    out = tmp_path / "pc"
    assert main(["param-change", *map(str, runs), "--out", str(out)]) == 0
    assert "(paper Fig. 4 right)" in capsys.readouterr().out
    table = pd.read_csv(out / "param_change.csv")
    assert list(table["checkpoint"].unique()) == ["clipfit λ=8 s1", "clipfit λ=8 s2", "clipfit λ=0"]
    configs = pd.read_csv(out / "param_change_configs.csv", dtype={"seeds": str})
    assert _columns(out / "param_change_configs.csv") == list(schemas.PARAM_CONFIGS)
    pooled = configs[configs["configuration"] == "clipfit λ=8"].set_index("name")
    assert (pooled["runs"] == 2).all() and (pooled["seeds"] == "1,2").all() and len(pooled) == 14
    seeds = table[table["checkpoint"].str.startswith("clipfit λ=8")].groupby("name")["sq_change"]
    assert pooled["sq_change_mean"].to_dict() == pytest.approx(seeds.mean().to_dict())
    assert pooled["sq_change_std"].to_dict() == pytest.approx(seeds.std().to_dict())  # sample std over 2 seeds
    assert (pooled["sq_change_std"] > 0).all()  # the seeds took different batches
    sidecar = json.loads((out / "param_change.json").read_text())
    assert sidecar["summary"]["finding"].startswith("Fig. 4 right, clipfit λ=8 against clipfit λ=0")

    out = tmp_path / "gc"
    assert main(["grad-cos", *map(str, runs), "--out", str(out)]) == 0
    _figure_files(out, "grad_cos")
    assert _columns(out / "grad_cos_steps.csv") == list(schemas.GRAD_COS_STEPS)
    summary = pd.read_csv(out / "grad_cos.csv")
    assert _columns(out / "grad_cos.csv") == list(schemas.GRAD_COS)
    assert len(summary) == 3 * 14 and summary["mean_cos"].between(-1, 1).all()
    # the trainer logged grad_cos: null on the first step only, and the table holds exactly the logged values
    records = [json.loads(line) for line in (tiny_run[0] / "layers.jsonl").read_text().splitlines()]
    assert all((r["grad_cos"] is None) == (r["step"] == 1) for r in records)
    steps = pd.read_csv(out / "grad_cos_steps.csv")
    own = steps[steps["checkpoint"] == "clipfit λ=8 s1"].set_index(["step", "name"])["grad_cos"]
    assert own.to_dict() == pytest.approx({(r["step"], r["name"]): r["grad_cos"] for r in records if r["step"] > 1})


def test_a_run_written_before_grad_cos_is_named_not_failed(tiny_run, tmp_path, caplog):
    old = tmp_path / "old"
    shutil.copytree(tiny_run[0], old)
    records = [json.loads(line) for line in (old / "layers.jsonl").read_text().splitlines()]
    (old / "layers.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "grad_cos"}) + "\n"
                                              for r in records))  # fmt: skip
    out = tmp_path / "gc"
    assert main(["grad-cos", str(old), "--out", str(out)]) == 0
    assert "No grad_cos in the layers.jsonl of" in caplog.text and not (out / "grad_cos.csv").exists()


def test_per_class_agrees_with_the_runs_own_evaluation(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    out = tmp_path / "per-class"
    # the run's evaluation capped each label space at 64 test images (evenly spaced): the same images here
    assert main(["per-class", str(run_dir), "--max-images", "64", "--worst", "3", "--out", str(out)]) == 0
    _figure_files(out, "per_class")
    for stem in ("per_class", "per_class_configs", "per_class_confusion", "per_class_correlation"):
        assert _columns(out / f"{stem}.csv") == list(schemas.ALL[stem])
    table = pd.read_csv(out / "per_class.csv")
    results = json.loads((run_dir / "results.json").read_text())
    for subset in ("base", "new"):
        part = table[table["subset"] == subset]
        assert part["images"].sum() == 64
        # images-weighted per-class accuracy is the run's own accuracy, zero-shot and fine-tuned
        assert 100 * part["zs_correct"].sum() / 64 == pytest.approx(results["zero_shot"][f"{subset}_acc"], abs=1e-3)
        assert 100 * part["ft_correct"].sum() / 64 == pytest.approx(results["metrics"][f"{subset}_acc"], abs=1e-3)
    assert table["text_cos"].between(-1, 1 + 1e-6).all() and (table["text_cos"] < 1 - 1e-9).any()  # text biases moved
    confusion = pd.read_csv(out / "per_class_confusion.csv")
    assert (
        confusion["true_class"].nunique() == 3
        and (confusion["change"] == confusion["ft_count"] - confusion["zs_count"]).all()
    )
    correlation = pd.read_csv(out / "per_class_correlation.csv")
    assert list(correlation["subset"]) == ["base", "new", "all"] and (correlation["classes"] == [32, 32, 64]).all()


def test_channels(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    out = tmp_path / "channels"
    assert main(["channels", str(run_dir), "--out", str(out)]) == 0
    _figure_files(out, "channels")
    channels, summary = pd.read_csv(out / "channels.csv"), pd.read_csv(out / "channel_concentration.csv")
    assert _columns(out / "channels.csv") == list(schemas.CHANNELS)
    assert _columns(out / "channel_concentration.csv") == list(schemas.CHANNEL_CONCENTRATION)
    # all 14 trained tensors are 1-D (448 values): every channel listed, each tensor once
    assert len(summary) == 14 and len(channels) == 448
    ckpt = load_checkpoint(run_dir)
    for row in summary.itertuples():
        d = (ckpt.final[row.name].double() - ckpt.init[row.name].double()).numpy()
        assert row.top_change == pytest.approx(d[row.top_channel]) and abs(d[row.top_channel]) == pytest.approx(
            abs(d).max()
        )
    assert summary["top10_share"].between(summary["top1_share"], 1).all() and summary["gini"].between(0, 1).all()


def test_two_plain_open_clip_weight_files(shared_tiny_weights, tmp_path, monkeypatch):
    # weights clipfit did not write: a random clipfit-tiny (safetensors) and a WiSE-FT-style interpolation half way
    # to another random one, saved with torch.save; read as data, never by torch.load
    from clipfit.models import build_model

    a = load_file(shared_tiny_weights)
    torch.manual_seed(99)
    other = build_model("clipfit-tiny", "none").model
    c = other.state_dict()
    b = {k: a[k] + 0.5 * (c[k] - a[k]) if a[k].is_floating_point() else a[k] for k in a}
    torch.save(b, tmp_path / "wise-ft.pt")
    tokens = torch.zeros(2, 77, dtype=torch.long)
    tokens[:, :2] = torch.tensor([49406, 49407])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated, but it is the format of OpenAI's archives
        torch.jit.trace(other, (torch.randn(2, 3, 32, 32), tokens), strict=False, check_trace=False).save(
            str(tmp_path / "openai-like.pt")
        )
    for module, name in ((torch, "load"), (torch.jit, "load")):
        monkeypatch.setattr(module, name, lambda *args, **kwargs: pytest.fail("a weights file went to torch.load"))
    pair = ["--weights", f"clipfit-tiny:{shared_tiny_weights}", f"clipfit-tiny:{tmp_path / 'wise-ft.pt'}"]
    out = tmp_path / "pc"
    assert main(["param-change", *pair, "--out", str(out)]) == 0
    table = pd.read_csv(out / "param_change.csv").set_index("name")
    params = dict(build_model("clipfit-tiny", "none").model.named_parameters())
    assert set(table.index) == set(params)  # every parameter compared, not a recipe's
    expected = {n: 0.25 * float((c[n].double() - a[n].double()).pow(2).sum()) for n in params}
    assert table["sq_change"].to_dict() == pytest.approx(expected, rel=1e-6)
    # an OpenAI TorchScript archive against the interpolation: B - C = (A - C) / 2, the same squared change
    archive = ["--weights", f"clipfit-tiny:{tmp_path / 'openai-like.pt'}", f"clipfit-tiny:{tmp_path / 'wise-ft.pt'}"]
    assert main(["param-change", *archive, "--out", str(tmp_path / "ts-pc")]) == 0
    from_archive = pd.read_csv(tmp_path / "ts-pc" / "param_change.csv").set_index("name")["sq_change"]
    assert from_archive.to_dict() == pytest.approx(expected, rel=1e-6)
    # not confined to a few groups: grouped by module family, and placed in depth
    groups = pd.read_csv(out / "param_change_groups.csv")
    families = set(groups.loc[groups["level"] == "family", "group"])
    assert {"image attn", "image FFN-in", "image LN", "text embedding", "text projection"} <= families
    _figure_files(out, "param_change_families")
    data = ["--dataset", "shapes", "--max-images", "32"]
    assert main(["rep-change", *pair, *data, "--out", str(tmp_path / "rc")]) == 0
    cka = pd.read_csv(tmp_path / "rc" / "rep_change.csv")
    assert (cka["cka"] < 1 - 1e-6).all()  # every block of both towers moved
    assert main(["tsne", *pair, *data, "--max-classes", "4", "--perplexity", "5", "--out", str(tmp_path / "ts")]) == 0
    assert list(pd.read_csv(tmp_path / "ts" / "tsne_metrics.csv")["model"]) == ["zero-shot", "fine-tuned"]


def test_grad_sums_of_a_run_and_of_a_pretrained_model(tiny_run, tmp_path):
    run_dir, weights = tiny_run
    out = tmp_path / "gs"
    assert main(["grad-sums", str(run_dir), "--all-candidates", "--batches", "2", "--out", str(out)]) == 0
    _figure_files(out, "grad_sums")
    _figure_files(out, "grad_sums_steps")
    _figure_files(out, "grad_sums_training")
    assert _columns(out / "grad_sums.csv") == list(schemas.GRAD_SUMS)
    assert _columns(out / "grad_sums_steps.csv") == list(schemas.GRAD_STEPS)
    assert _columns(out / "grad_sums_training.csv") == list(schemas.GRAD_TRAINING)
    # Fig. 4 left is the training-time sum: each trained tensor's grad_sq_cum at the run's last logged step
    training = pd.read_csv(out / "grad_sums_training.csv").set_index("name")
    records = [json.loads(line) for line in (run_dir / "layers.jsonl").read_text().splitlines()]
    last_step = max(r["step"] for r in records)
    expected = {r["name"]: r["grad_sq_cum"] for r in records if r["step"] == last_step}
    assert set(training.index) == set(expected) and (training["steps"] == last_step).all()
    assert all(training.loc[n, "grad_sq_sum"] == pytest.approx(v, rel=1e-12) for n, v in expected.items())
    assert (training["grad_sq_per_value"] * training["numel"]).to_numpy() == pytest.approx(training["grad_sq_sum"])
    table = pd.read_csv(out / "grad_sums.csv")
    assert table["in_recipe"].sum() == 14 and len(table) > 14 and (table["batches"] == 2).all()
    assert list(table["rank"]) == list(range(1, len(table) + 1)) and table["grad_sq_sum"].is_monotonic_decreasing
    out = tmp_path / "gs-pretrained"
    argv = ["grad-sums", "--pretrained", f"clipfit-tiny:{weights}", "--dataset", "shapes", "--split", "test"]
    assert main([*argv, "--batches", "1", "--batch-size", "16", "--out", str(out)]) == 0
    table = pd.read_csv(out / "grad_sums.csv")
    assert len(table) == 14 and not (out / "grad_sums_steps.csv").exists()


def test_tsne(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    out = tmp_path / "tsne"
    argv = ["tsne", str(run_dir), "--max-classes", "4", "--max-images", "40", "--perplexity", "5"]
    assert main([*argv, "--out", str(out)]) == 0
    _figure_files(out, "tsne")
    assert _columns(out / "tsne.csv") == list(schemas.TSNE)
    assert _columns(out / "tsne_metrics.csv") == list(schemas.TSNE_METRICS)
    points, metrics = pd.read_csv(out / "tsne.csv"), pd.read_csv(out / "tsne_metrics.csv")
    assert list(metrics["model"]) == ["zero-shot", "fine-tuned"] and (metrics["images"] == 40).all()
    assert points.groupby("model").size().tolist() == [40, 40] and points["label"].nunique() == 4


def test_rep_change(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    out = tmp_path / "rc"
    assert main(["rep-change", str(run_dir), "--max-images", "32", "--out", str(out)]) == 0
    _figure_files(out, "rep_change")
    assert _columns(out / "rep_change.csv") == list(schemas.REP_CHANGE)
    table = pd.read_csv(out / "rep_change.csv")
    # clipfit-tiny: 2 blocks + the output feature in each tower; 32 images, 64 class prompts
    assert table.groupby("tower")["position"].apply(list).to_dict() == {
        "image": ["0", "1", "output"],
        "text": ["0", "1", "output"],
    }
    assert table.set_index("tower")["inputs"].to_dict() == {"image": 32, "text": 64}
    assert ((table["cka"] > 0.5) & (table["cka"] <= 1 + 1e-9)).all()


def test_results(tiny_run, tmp_path, capsys):
    run_dir, _ = tiny_run
    out = tmp_path / "results"
    assert main(["results", str(run_dir.parents[4]), "--published", "--out", str(out)]) == 0
    _figure_files(out, "results_base2new")
    for suffix in (".md", ".tex"):
        assert (out / f"results_base2new{suffix}").is_file()
    assert _columns(out / "results_base2new.csv") == list(schemas.BASE2NEW)
    assert _columns(out / "results_runs.csv") == list(schemas.RESULTS_RUNS)
    printed = capsys.readouterr().out
    assert "| shapes | clipfit" in printed and "CLIPFit (paper)" in printed


def test_results_write_the_readme_block_and_the_scatter(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    out, readme = tmp_path / "results", tmp_path / "README.md"
    from analysis.commands.results import README_BEGIN, README_END

    readme.write_text(f"# Project\n\n## Results\n\n{README_BEGIN}\nstale numbers\n{README_END}\n\n## Next\n")
    argv = ["results", str(run_dir.parents[4]), "--out", str(out), "--readme", str(readme)]
    assert main([*argv, "--readme-figures", str(tmp_path / "docs" / "figures")]) == 0
    _figure_files(out, "results_base2new_scatter")
    text = readme.read_text()
    assert "stale numbers" not in text and text.startswith("# Project") and text.endswith("## Next\n")
    results = json.loads((run_dir / "results.json").read_text())
    # generated from results.json († marks numbers on capped test sets, not comparable)
    assert f"| shapes | clipfit † | {results['metrics']['base_acc']:.2f}" in text
    # and signed: what model, seeds, precision and versions produced the numbers
    versions, r = results["versions"], results
    assert f"Model {r['model']} / {r['pretrained']}; shots {r['shots']}; seeds {r['seed']};" in text
    assert f"precision {results['precision']}; clipfit {versions['clipfit']}, torch {versions['torch']}." in text
    assert "![New against Base accuracy](docs/figures/results_base2new_scatter.png)" in text
    assert (tmp_path / "docs" / "figures" / "results_base2new_scatter.png").is_file()


def test_results_readme_without_the_markers_is_refused(tiny_run, tmp_path, capsys):
    run_dir, _ = tiny_run
    readme = tmp_path / "README.md"
    readme.write_text("# nothing to replace\n")
    argv = ["results", str(run_dir.parents[4]), "--out", str(tmp_path / "o"), "--readme", str(readme)]
    assert main(argv) == 2
    assert "has no results block" in capsys.readouterr().err and readme.read_text() == "# nothing to replace\n"


class _Figures(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, str] = {}
        self.links: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "img":
            self.images[attrs["data-figure"]] = attrs["src"]
        if tag == "a":
            self.links.append(attrs["href"])


def test_report(tiny_run, tmp_path, capsys):
    run_dir, _ = tiny_run
    out = tmp_path / "report"
    argv = ["report", str(run_dir), "--out", str(out), "--max-images", "40", "--max-classes", "4", "--batches", "1"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out / "index.html")
    manifest = json.loads((out / "report.json").read_text())
    keys = [f["key"] for f in manifest["figures"]]
    assert keys == [
        "results_base2new",
        "results_base2new_scatter",
        "training_curves",
        "param_change",
        "param_change_steps",
        "grad_sums_training",
        "grad_sums_steps",
        "grad_cos",
        "channels",
        "grad_sums",
        "per_class",
        "tsne",
        "rep_change",
    ]
    titles = {f["key"]: f["title"] for f in manifest["figures"]}
    assert "paper Fig. 4 left" in titles["grad_sums_training"] and "Fig. 4" not in titles["grad_sums"]
    parser = _Figures()
    parser.feed((out / "index.html").read_text())
    parser.close()
    assert sorted(parser.images) == sorted(keys)  # every figure embedded, none twice
    assert len(parser.ids) == len(set(parser.ids))  # anchors are unique
    for src in parser.images.values():
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    files = [link for link in parser.links if not link.startswith("#")]  # (the others: the table of contents)
    assert files and all((out / link).is_file() for link in files)  # the SVG/CSV links resolve offline
    markdown = (out / "report.md").read_text()
    for figure in manifest["figures"]:
        assert f'src="{figure["png"]}"' in markdown and (out / figure["png"]).is_file()
        assert len(figure["caption"]) > 40
    assert "| Base | New | HM |" in markdown and "model:clipfit-tiny" in markdown
    assert_one_type_scale(out)  # every figure's text shown at 8-10 pt
    header = manifest["header"]  # date, versions, machine, and the run's training time from its results.json
    seconds = json.loads((run_dir / "results.json").read_text())["train_seconds"]
    assert header["Training time"] == f"clipfit {seconds:.1f} s" and "cores" in header["Report made on"]


def test_bad_input_is_a_clear_error(tiny_run, tmp_path, capsys):
    run_dir, _ = tiny_run
    junk = tmp_path / "model.pth"
    junk.write_bytes(b"\x00not a checkpoint\x00")
    assert main(["param-change", str(junk), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "not a clipfit checkpoint" in err and "Traceback" not in err

    argv = ["tsne", str(run_dir), "--pretrained", "shapes-vit-tiny:shapes-world", "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "was trained on clipfit-tiny" in err and "Traceback" not in err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["results", str(empty), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "no results.json under" in err and "Traceback" not in err

    assert main(["report", str(empty), "--out", str(tmp_path / "x")]) == 2
    assert "no checkpoint in" in capsys.readouterr().err


def _head_run(train_tiny, root: Path, recipe: str) -> Path:
    """A finished 3-epoch run of a head recipe at lr 1.0 (its head moves far enough to see), into ``root``."""
    return train_tiny(root / recipe, recipe=recipe, warmup_epochs=0, lr=1.0, max_eval_images=32)[0]


def test_analyses_of_a_head_recipe_go_through_its_head(train_tiny, tmp_path):
    # CLIP-Adapter changes no tower weight: every block is unchanged (CKA 1) and only the output
    # feature, which goes through the adapter, moved
    adapter = _head_run(train_tiny, tmp_path, "clip-adapter")
    assert main(["rep-change", str(adapter), "--max-images", "32", "--out", str(tmp_path / "rc")]) == 0
    image = pd.read_csv(tmp_path / "rc" / "rep_change.csv").query("tower == 'image'").set_index("position")["cka"]
    assert (image.drop("output") > 1 - 1e-9).all() and image["output"] < 1 - 1e-6  # without the adapter: 1.0
    # CoOp: the loss of grad-sums goes through the learned context, so the context has a gradient
    coop = _head_run(train_tiny, tmp_path, "coop")
    assert main(["grad-sums", str(coop), "--batches", "1", "--out", str(tmp_path / "gs")]) == 0
    table = pd.read_csv(tmp_path / "gs" / "grad_sums.csv").set_index("name")
    assert table.loc[table["in_recipe"], "grad_sq_sum"].gt(0).all()


def test_a_comparison_report_over_a_sweep(tiny_run, seed2_run, lambda_pair, tmp_path):
    # a sweep folder: seeds 1 and 2 of λ = 8 and a λ = 0 run, found under it
    sweep = tmp_path / "sweep"
    for name, run in (("lambda8/seed1", tiny_run[0]), ("lambda8/seed2", seed2_run), ("lambda0/seed1", lambda_pair[1])):
        shutil.copytree(run, sweep / name)
    out = tmp_path / "report"
    argv = ["report", str(sweep), "--out", str(out), "--max-images", "32", "--max-classes", "4", "--batches", "1"]
    assert main(argv) == 0
    manifest = json.loads((out / "report.json").read_text())
    assert manifest["title"] == "clipfit report: 2 configurations (3 runs) on shapes"
    keys = [f["key"] for f in manifest["figures"]]
    keys_expected = ("training_curves", "param_change", "param_change_groups", "grad_cos", "channels", "per_class")
    for key in (*keys_expected, "tsne", "rep_change"):
        assert key in keys
    # the summary opens the report with a number in every line; results are per configuration, seeds averaged
    summary = manifest["summary"]
    assert summary[0].startswith("Results: shapes base-to-new HM: zero-shot") and "clipfit λ=8" in summary[0]
    assert "(2 seeds)" in summary[0] and all(any(ch.isdigit() for ch in line) for line in summary)
    assert any(line.startswith("Fig. 4 right, clipfit λ=8 against clipfit λ=0") for line in summary)
    page = (out / "index.html").read_text()
    assert page.index('id="summary"') < page.index('id="contents"') < page.index('id="runs"')
    parser = _Figures()
    parser.feed(page)
    anchors = [link[1:] for link in parser.links if link.startswith("#")]
    assert set(keys) <= set(anchors) and set(anchors) <= set(parser.ids)  # the contents reach every section
    assert '<div class="scroll"><table>' in page and ".scroll { overflow-x: auto;" in page  # wide tables scroll
    markdown = (out / "report.md").read_text()
    assert "## Summary" in markdown and "## Contents" in markdown and "clipfit λ=8 | " in markdown
    assert_one_type_scale(out)  # the comparative figures too
    # Fig. 4 left over seeds: the mean of the two seeds' sums over training
    fig4 = pd.read_csv(out / "grad-sums" / "grad_sums_training_configs.csv").set_index(["configuration", "name"])
    per_run = pd.read_csv(out / "grad-sums" / "grad_sums_training.csv")
    seeds = per_run[per_run["checkpoint"].str.startswith("clipfit λ=8")].groupby("name")["grad_sq_sum"].mean()
    assert fig4.xs("clipfit λ=8")["grad_sq_sum_mean"].to_dict() == pytest.approx(seeds.to_dict())
    assert (fig4.xs("clipfit λ=8")["runs"] == 2).all() and (fig4.xs("clipfit λ=0")["runs"] == 1).all()
