"""``clipfit-analyze rep-change``: linear CKA per block, pretrained against fine-tuned hidden states.

For each block of both towers, CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F * ||Yc^T Yc||_F) between
the pooled hidden states X (pretrained) and Y (fine-tuned) of the same inputs, columns centred
(see :mod:`analysis.rep_change`): test images for the image tower, the class prompts for the text
tower.

Several runs: each run's table (``rep_change_runs.csv``; ``rep_change.csv`` stays the first run's), drawn
as 1 - CKA per block for each configuration, mean over its seeds with the std as error bars.
``--weights ARCH:A ARCH:B`` (with ``--dataset``) compares the networks of two weight files.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import pandas as pd
import torch

from analysis.commands.bundle import announce, write_figure
from analysis.commands.common import (
    Common,
    DataOptions,
    checkpoint_values,
    data_config,
    device,
    label_space_images,
    load_sources,
    prepare_data,
    test_images,
    trained_model,
)
from analysis.features import image_states, text_states
from analysis.outputs import OutputDir
from analysis.rep_change import rep_change, rep_change_configs
from analysis.schemas import REP_RUNS
from analysis.sources import Source, configurations, default_labels
from clipfit.prompts import class_tokens
from figures.rep_change import (
    caption_rep_change,
    caption_rep_configs,
    draw_rep_change,
    draw_rep_configs,
    finding_rep_change,
)
from figures.report import ReportFigure


@dataclass
class RepChangeOptions:
    """Which run and images ``rep-change`` compares."""

    checkpoints: list[str]  # run directories, checkpoint files or original CLIPFit checkpoints
    weights: list[str] | None = None  # ARCH:FILE_A ARCH:FILE_B: two weight files (needs --dataset)
    pretrained: str | None = None  # MODEL:SOURCE (required for original CLIPFit checkpoints)
    recipe: str = "clipfit"  # tensors an original CLIPFit run trained
    data: DataOptions = field(default_factory=DataOptions)  # dataset and draw (default: the run's)
    subset: str | None = None  # label space of the test images (default: the run's training one)
    max_images: int = 512  # test images at most for the image tower
    batch_size: int = 256  # images per forward pass


OPTIONS = RepChangeOptions


def rep_change_of(source: Source, opts: RepChangeOptions, dev: torch.device) -> tuple[pd.DataFrame, dict]:
    """The REP_CHANGE table of one run (its own test images and class prompts), and what it was measured on."""
    cfg = data_config(source, opts.data)
    data = prepare_data(cfg)
    samples, _, subset = label_space_images(data, opts.subset, None, opts.max_images)
    bundle = trained_model(source, opts.pretrained, dev)
    tokens = class_tokens(bundle.tokenizer, bundle.model, data.template, data.dataset.classnames)

    images = test_images(data, bundle.preprocess)

    def states(desc: str, encode=None) -> dict[str, dict[str, torch.Tensor]]:
        image, _ = image_states(
            bundle.model, samples, data.dataset.reader, bundle.preprocess, dev, opts.batch_size, True, desc, encode,
            images,
        )  # fmt: skip
        return {"image": image, "text": text_states(bundle.model, tokens)}

    # the fine-tuned image output goes through the recipe's head (CLIP-Adapter's adapter); the text
    # tower is measured on the template prompts, which a CoOp context does not change
    after = states("hidden states (fine-tuned)", functools.partial(bundle.head.encode_images, bundle.model))
    with checkpoint_values(bundle.model, source.ckpt, "init", model_name=bundle.name):
        before = states("hidden states (pretrained)")
    inputs = {
        "dataset": cfg.data.dataset,
        "image_inputs": f"{len(samples)} test images of label space '{subset}'",
        "text_inputs": f"{len(tokens)} class prompts ({data.template!r}, all classes)",
    }
    return rep_change(before, after), inputs


def run_rep_change(opts: RepChangeOptions, common: Common) -> list[ReportFigure]:
    """Linear CKA between pretrained and fine-tuned hidden states at every block of both towers."""
    dev = device(common.device)
    sources = load_sources(opts.checkpoints, opts.weights, opts.pretrained, opts.recipe)
    measured = [rep_change_of(s, opts, dev) for s in sources]
    table, summary = measured[0]
    out = OutputDir(common.out, common.argv, "rep-change")
    title = "Representation change per block (linear CKA)"
    signatures = [s.signature for s in sources]
    if len(sources) == 1:
        draw, caption, tables = (lambda: draw_rep_change(table)), caption_rep_change(table), table
        finding = finding_rep_change(table)
    else:
        labels, config_of = default_labels(sources), configurations(sources)
        runs = pd.concat(
            [t.assign(checkpoint=label, configuration=config) for (t, _), label, config in
             zip(measured, labels, config_of, strict=True)],
            ignore_index=True,
        )  # fmt: skip
        configs = rep_change_configs(runs)
        tables = {"rep_change": table, "rep_change_runs": runs[list(REP_RUNS)], "rep_change_configs": configs}
        draw, caption = (lambda: draw_rep_configs(configs)), caption_rep_configs(configs)
        finding = finding_rep_change(configs)
        title += ", configurations side by side"
        summary = {**summary, "runs": dict(zip(labels, config_of, strict=True))}
    figure = write_figure(out, "rep_change", tables, draw, title, caption, signatures, summary, finding=finding)
    return [figure]


def execute(opts: RepChangeOptions, common: Common) -> None:
    """Run, then print where the figure went."""
    announce(run_rep_change(opts, common))
