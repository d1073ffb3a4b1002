"""How a recipe turns images and class names into features.

Most recipes change tensors *inside* CLIP and use it as is (:class:`ClipHead`). Baselines that add
parameters attach them to the open_clip model as sub-modules, so they are named, trained,
checkpointed and analysed like any other tensor. Each head is a dataclass whose fields are its
options, with their defaults and help beside them: ``clipfit-train`` turns every field into a flag
(``--coop-ctx``) and a run records the resolved values, so a run's head is rebuilt from its record.

A recipe names its head (:mod:`clipfit.recipes`); adding a head is one module here (and the module it
attaches, in :mod:`clipfit.heads.parts`) and its recipe. The heads import torch only when they compute
something, so the records and their options load without it (``clipfit-train --help``).
"""

from clipfit.heads.adapter import AdapterHead
from clipfit.heads.base import ClipHead, HeadOptionError, option
from clipfit.heads.cocoop import CoCoOpHead
from clipfit.heads.coop import CoOpHead
from clipfit.heads.maple import MaPLeHead
from clipfit.heads.probe import ProbeHead

__all__ = [
    "AdapterHead",
    "ClipHead",
    "CoCoOpHead",
    "CoOpHead",
    "HeadOptionError",
    "MaPLeHead",
    "ProbeHead",
    "option",
]
