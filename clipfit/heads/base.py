"""The head protocol and plain CLIP: the model's own image encoder and the dataset's template."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from clipfit.errors import ConfigError

if TYPE_CHECKING:  # torch and open_clip load when a head computes features, not with the records
    import torch
    from torch import nn


class HeadOptionError(ConfigError):
    """A head option is unknown or out of range."""


def option(default: Any, help: str, type: Callable[[str], Any] = str) -> Any:
    """A head option: a dataclass field with the help and value type of its ``clipfit-train`` flag."""
    return dataclasses.field(default=default, metadata={"help": help, "type": type})


@dataclass
class ClipHead:
    """Plain CLIP: the model's own image encoder and the dataset's template. No options."""

    kind: ClassVar[str] = "clip"
    per_image: ClassVar[bool] = False  # True: class features depend on the image (encode_classes_per_image)
    prompts_image: ClassVar[bool] = False  # True: the head's prompt tensors also change the image features
    # option names of records written before the options were named after their flags
    legacy_names: ClassVar[Mapping[str, str]] = {}

    # ------------------------------------------------------------------ options

    @classmethod
    def options(cls) -> tuple[dataclasses.Field, ...]:
        """The head's options (its dataclass fields); ``clipfit-train`` makes a flag of each."""
        return dataclasses.fields(cls)

    @classmethod
    def from_options(cls, values: Mapping[str, Any] | None = None) -> ClipHead:
        """The head with ``values`` for its options (others keep their defaults); unknown names are refused."""
        values = dict(values or {})
        known = {f.name for f in cls.options()}
        unknown = sorted(set(values) - known)
        if unknown:
            raise HeadOptionError(
                f"the {cls.kind} head has no option {', '.join(unknown)}; "
                f"its options: {', '.join(sorted(known)) or 'none'}"
            )
        head = cls(**{k: v for k, v in values.items() if v is not None})
        head.validate()
        return head

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> ClipHead:
        """The head a run recorded (:meth:`describe`'s output, in a checkpoint or results.json)."""
        values = {cls.legacy_names.get(k, k): v for k, v in (record or {}).items() if k != "kind"}
        return cls.from_options(values)

    def validate(self) -> None:
        """Raise HeadOptionError for option values out of range."""

    def describe(self) -> dict[str, Any]:
        """What a run records of its head: the kind and every option value."""
        return {"kind": self.kind, **dataclasses.asdict(self)}

    # ------------------------------------------------------------------ features

    def attach(self, model: nn.Module, tokenizer: Callable, classnames: Sequence[str] | None = None) -> None:
        """Add this head's modules to ``model`` (none for plain CLIP). ``classnames`` is the training label space."""

    def class_inputs(
        self, tokenizer: Callable, model: nn.Module, template: str, classnames: Sequence[str]
    ) -> torch.Tensor:
        """What :meth:`encode_classes` takes for a label space: token ids of the class prompts."""
        from clipfit.prompts import class_tokens

        return class_tokens(tokenizer, model, template, classnames)

    def encode_classes(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        from clipfit.towers import encode_text

        return encode_text(model, inputs)

    def encode_images(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model.encode_image(images)

    def encode_classes_per_image(
        self, model: nn.Module, inputs: torch.Tensor, image_features: torch.Tensor
    ) -> torch.Tensor:
        """(B, C, D) class features for B normalised image features (heads with ``per_image``)."""
        return self.encode_classes(model, inputs).unsqueeze(0).expand(len(image_features), -1, -1)
