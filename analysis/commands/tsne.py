"""``clipfit-analyze tsne``: t-SNE of zero-shot against fine-tuned image features (paper Fig. 5).

The same test images through the pretrained and the fine-tuned model (the fine-tuned one through
the recipe's head, e.g. CLIP-Adapter's adapter), each embedded separately; beside the picture,
numbers from the feature space itself (see :mod:`analysis.tsne`):
silhouette = mean_i (b_i - a_i) / max(a_i, b_i) (cosine) and the leave-one-out k-NN accuracy.

Several runs (of one dataset): zero-shot (the first run's pretrained values) beside each configuration's
first run; the numbers of every run, averaged over the seeds of a configuration in the caption.
``--weights ARCH:A ARCH:B`` (with ``--dataset``): A as zero-shot, B as fine-tuned.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

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
from analysis.errors import AnalysisError
from analysis.features import image_states
from analysis.outputs import OutputDir
from analysis.sources import configurations, default_labels
from analysis.tsne import tsne_tables
from figures.report import ReportFigure
from figures.tsne import caption_tsne, draw_tsne, finding_tsne


@dataclass
class TsneOptions:
    """Which run, images and t-SNE settings ``tsne`` uses."""

    checkpoints: list[str]  # run directories, checkpoint files or original CLIPFit checkpoints (one dataset)
    weights: list[str] | None = None  # ARCH:FILE_A ARCH:FILE_B: two weight files (needs --dataset)
    pretrained: str | None = None  # MODEL:SOURCE (required for original CLIPFit checkpoints)
    recipe: str = "clipfit"  # tensors an original CLIPFit run trained
    data: DataOptions = field(default_factory=DataOptions)  # dataset and draw (default: the run's)
    subset: str | None = None  # base, new or all (default: the label space the run trained on)
    max_classes: int = 10  # classes shown, spread over the label space and their names' words (analysis.tsne.spread)
    max_images: int = 400  # test images at most, evenly spaced over the selected classes
    perplexity: float = 30.0  # t-SNE perplexity (capped at (n - 1) / 3)
    tsne_seed: int = 0  # t-SNE random_state
    knn: int = 5  # k of the k-NN accuracy
    batch_size: int = 256  # images per forward pass


OPTIONS = TsneOptions


def run_tsne(opts: TsneOptions, common: Common) -> list[ReportFigure]:
    """t-SNE of zero-shot and fine-tuned image features of the same test images (Fig. 5)."""
    dev = device(common.device)
    sources = load_sources(opts.checkpoints, opts.weights, opts.pretrained, opts.recipe)
    source = sources[0]
    cfg = data_config(source, opts.data)
    data = prepare_data(cfg)
    samples, classnames, subset = label_space_images(data, opts.subset, opts.max_classes, opts.max_images)
    names = ["fine-tuned"] if len(sources) == 1 else default_labels(sources)
    config_of = dict(zip(names, configurations(sources), strict=True))
    features = {}
    for i, (run, name) in enumerate(zip(sources, names, strict=True)):
        if data_config(run, opts.data).data.dataset != cfg.data.dataset:
            raise AnalysisError(f"{run.path} was trained on another dataset than {source.path}; t-SNE needs one")
        bundle = trained_model(run, opts.pretrained, dev)
        args = (samples, data.dataset.reader, bundle.preprocess, dev, opts.batch_size, False)
        images = test_images(data, bundle.preprocess)
        if i == 0:
            with checkpoint_values(bundle.model, run.ckpt, "init", model_name=bundle.name):
                zero, labels = image_states(bundle.model, *args, desc="features (zero-shot)", images=images)
            features["zero-shot"] = zero["output"].numpy()
        with_head = functools.partial(bundle.head.encode_images, bundle.model)  # e.g. CLIP-Adapter's adapter
        tuned, _ = image_states(bundle.model, *args, desc=f"features ({name})", encode=with_head, images=images)
        features[name] = tuned["output"].numpy()
    shown = {"zero-shot", *{names[list(config_of.values()).index(c)] for c in dict.fromkeys(config_of.values())}}
    points, metrics = tsne_tables(
        features, labels.numpy(), classnames, opts.perplexity, opts.tsne_seed, opts.knn, embedded=shown
    )

    summary = {
        "dataset": cfg.data.dataset,
        "subset": subset,
        "classes": classnames,
        "images": len(samples),
        "perplexity": opts.perplexity,
        "seed": opts.tsne_seed,
        "metrics": metrics.to_dict("records"),
        "configurations": config_of,
    }
    title = f"t-SNE of image features, zero-shot vs fine-tuned (paper Fig. 5; {cfg.data.dataset} {subset} test images)"
    figure = write_figure(
        OutputDir(common.out, common.argv, "tsne"),
        "tsne",
        {"tsne": points, "tsne_metrics": metrics},
        lambda: draw_tsne(points, metrics),
        title,
        caption_tsne(metrics, config_of if len(sources) > 1 else None, classnames, len(data.subsets[subset].labels)),
        [s.signature for s in sources],
        summary,
        finding=finding_tsne(metrics, config_of),
    )
    return [figure]


def execute(opts: TsneOptions, common: Common) -> None:
    """Run, then print where the figure went."""
    announce(run_tsne(opts, common))
