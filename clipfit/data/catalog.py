"""Every dataset clipfit knows, one :class:`~clipfit.data.records.DatasetRecord` each (data).

The shapes world (generated, :mod:`clipfit.data.shapes`), the 11 CoOp benchmarks of base-to-new,
few-shot and cross-dataset transfer (in the papers' table order) and the 4 ImageNet variants of
domain generalisation (PAPER.md section 5). Each benchmark lives in its own folder under one data
root, in the layout of CoOp's DATASETS.md, with CoOp's split file, class-name rules and prompt
template; the epochs and few-shot lambda are the paper's (PAPER.md section 3: 10 epochs for
ImageNet and Food101, lambda 8 on DTD and SUN397; the record defaults elsewhere).

Adding a dataset: add its record here (and its reader, if none of :mod:`clipfit.data.split_readers`,
:mod:`clipfit.data.imagenet` fits). docs/datasets.md is rendered from these records (``make docs``).
"""

from __future__ import annotations

from clipfit.data import shapes
from clipfit.data.imagenet import (
    WnidSubsetReader,
    imagenet_a_wnids,
    imagenet_r_wnids,
    read_imagenet,
    read_imagenet_sketch,
    read_imagenetv2,
)
from clipfit.data.records import DatasetRecord
from clipfit.data.split_readers import (
    FOLDER_RULE,
    TRAINVAL_RULE,
    SplitFileReader,
    read_fgvc_aircraft,
    split_cars,
    split_class_folders,
    split_flowers,
    split_pets,
    split_sun397,
    split_ucf101,
)

# CoOp's class-name rules (datasets/caltech101.py, datasets/eurosat.py).
CALTECH_IGNORED = ("BACKGROUND_Google", "Faces_easy")
CALTECH_RENAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
EUROSAT_RENAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


def _drive(file_id: str) -> str:
    return f"https://drive.google.com/file/d/{file_id}/view?usp=sharing"


def _by_name(*records: DatasetRecord) -> dict[str, DatasetRecord]:
    """The records by name; a name used twice, or one that reads as a group or folder:/csv: data, is a bug."""
    out: dict[str, DatasetRecord] = {}
    groups = {r.group for r in records}
    for record in records:
        if record.name in out or record.name in groups or ":" in record.name:
            raise ValueError(f"dataset name '{record.name}' is listed twice or is reserved")
        out[record.name] = record
    return out


RECORDS: dict[str, DatasetRecord] = _by_name(
    # ------------------------------------------------------------------------ the shapes world (generated)
    DatasetRecord(
        name="shapes",
        title="the shapes world",
        reader=shapes.ShapesReader("target"),
        template=shapes.TEMPLATE,
        model=shapes.MODEL,
        needs_root=False,
        description="the built-in shapes world",
    ),
    DatasetRecord(
        name="shapes-pretrain",
        title="the shapes world's pretraining domain",
        reader=shapes.ShapesReader("pretrain"),
        template=shapes.TEMPLATE,
        model=shapes.MODEL,
        needs_root=False,
        description="the shapes world's pretraining domain (for checks; zero-shot is near 100%)",
    ),
    # ------------------------------------------------------------------------ the 11 benchmarks
    DatasetRecord(
        name="imagenet",
        title="ImageNet",
        reader=read_imagenet,
        epochs=10,
        folder="imagenet",
        tree="imagenet/\n"
        "|-- images/\n"
        "|   |-- train/        1,000 wnid folders: n01440764/n01440764_10026.JPEG, ...\n"
        "|   `-- val/          the same 1,000 wnid folders (val images sorted into them)\n"
        "`-- classnames.txt    optional: 'n01440764 tench' lines (else open_clip's CLIP names)",
        sources="images: https://image-net.org (ILSVRC-2012 train and val; val sorted into wnid folders)\n"
        f"classnames.txt: CoOp, {_drive('1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF')}\n"
        "split: the folders (train = images/train, test = images/val); no split file",
        group="all",
    ),
    DatasetRecord(
        name="caltech101",
        title="Caltech101",
        reader=SplitFileReader(
            "101_ObjectCategories",
            "split_zhou_Caltech101.json",
            split_class_folders(CALTECH_IGNORED),
            FOLDER_RULE + ", without BACKGROUND_Google and Faces_easy",
            CALTECH_RENAMES,
        ),
        folder="caltech-101",
        tree="caltech-101/\n"
        "|-- 101_ObjectCategories/   accordion/image_0001.jpg, airplanes/, ...\n"
        "`-- split_zhou_Caltech101.json",
        sources="images: 101_ObjectCategories.tar.gz from https://data.caltech.edu/records/mzrjq-6wc02\n"
        f"split_zhou_Caltech101.json: CoOp, {_drive('1hyarUivQE36mY6jSomru6Fjd-JzwcCzN')}",
        group="all",
    ),
    DatasetRecord(
        name="oxford_pets",
        title="OxfordPets",
        reader=SplitFileReader("images", "split_zhou_OxfordPets.json", split_pets, TRAINVAL_RULE),
        template="a photo of a {}, a type of pet.",
        folder="oxford_pets",
        tree="oxford_pets/\n"
        "|-- images/          Abyssinian_1.jpg, ...\n"
        "|-- annotations/     trainval.txt, test.txt (only needed for --make-split)\n"
        "`-- split_zhou_OxfordPets.json",
        sources="images, annotations: https://www.robots.ox.ac.uk/~vgg/data/pets/ (images.tar.gz, annotations.tar.gz)\n"
        f"split_zhou_OxfordPets.json: CoOp, {_drive('1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs')}",
        group="all",
    ),
    DatasetRecord(
        name="stanford_cars",
        title="StanfordCars",
        reader=SplitFileReader("", "split_zhou_StanfordCars.json", split_cars, TRAINVAL_RULE),
        folder="stanford_cars",
        tree="stanford_cars/\n"
        "|-- cars_train/      00001.jpg, ...\n"
        "|-- cars_test/       00001.jpg, ...\n"
        "|-- devkit/          cars_train_annos.mat, cars_meta.mat (only needed for --make-split)\n"
        "|-- cars_test_annos_withlabels.mat   (only needed for --make-split)\n"
        "`-- split_zhou_StanfordCars.json     (paths relative to stanford_cars/)",
        sources="images, devkit: http://ai.stanford.edu/~jkrause/cars/car_dataset.html "
        "(cars_train.tgz, cars_test.tgz,\n"
        "  car_devkit.tgz, cars_test_annos_withlabels.mat)\n"
        f"split_zhou_StanfordCars.json: CoOp, {_drive('1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT')}",
        group="all",
    ),
    DatasetRecord(
        name="oxford_flowers",
        title="Flowers102",
        reader=SplitFileReader(
            "jpg",
            "split_zhou_OxfordFlowers.json",
            split_flowers,
            "50% train, 20% val, 30% test of each class of imagelabels.mat, as CoOp does",
        ),
        template="a photo of a {}, a type of flower.",
        folder="oxford_flowers",
        tree="oxford_flowers/\n"
        "|-- jpg/                 image_00001.jpg, ...\n"
        "|-- imagelabels.mat      (only needed for --make-split)\n"
        "|-- cat_to_name.json     (only needed for --make-split)\n"
        "`-- split_zhou_OxfordFlowers.json",
        sources="images, imagelabels.mat: https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ (102flowers.tgz)\n"
        f"cat_to_name.json: CoOp, {_drive('1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0')}\n"
        f"split_zhou_OxfordFlowers.json: CoOp, {_drive('1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT')}",
        group="all",
    ),
    DatasetRecord(
        name="food101",
        title="Food101",
        reader=SplitFileReader("images", "split_zhou_Food101.json", split_class_folders(), FOLDER_RULE),
        template="a photo of {}, a type of food.",
        epochs=10,
        folder="food-101",
        tree="food-101/\n|-- images/          apple_pie/1005649.jpg, ...\n`-- split_zhou_Food101.json",
        sources="images: food-101.tar.gz from https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/\n"
        f"split_zhou_Food101.json: CoOp, {_drive('1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl')}",
        group="all",
    ),
    DatasetRecord(
        name="fgvc_aircraft",
        title="FGVCAircraft",
        reader=read_fgvc_aircraft,
        template="a photo of a {}, a type of aircraft.",
        folder="fgvc_aircraft",
        tree="fgvc_aircraft/       the data/ folder of fgvc-aircraft-2013b, renamed\n"
        "|-- images/          0034309.jpg, ...\n"
        "|-- variants.txt     one variant (class) per line, label order\n"
        "|-- images_variant_train.txt   '<image id> <variant>' lines\n"
        "|-- images_variant_val.txt\n"
        "`-- images_variant_test.txt",
        sources="all files: fgvc-aircraft-2013b.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/\n"
        "  (keep data/ and rename it fgvc_aircraft/); the split is the official one, no split file",
        group="all",
    ),
    DatasetRecord(
        name="sun397",
        title="SUN397",
        reader=SplitFileReader("SUN397", "split_zhou_SUN397.json", split_sun397, TRAINVAL_RULE),
        fewshot_reg_weight=8.0,
        folder="sun397",
        tree="sun397/\n"
        "|-- SUN397/          a/abbey/sun_aaalbzqrimafwbiv.jpg, ...\n"
        "|-- ClassName.txt, Training_01.txt, Testing_01.txt   (only needed for --make-split)\n"
        "`-- split_zhou_SUN397.json",
        sources="images: SUN397.tar.gz from https://vision.princeton.edu/projects/2010/SUN/\n"
        "partitions: Partitions.zip from the same page\n"
        f"split_zhou_SUN397.json: CoOp, {_drive('1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq')}",
        group="all",
    ),
    DatasetRecord(
        name="dtd",
        title="DTD",
        reader=SplitFileReader("images", "split_zhou_DescribableTextures.json", split_class_folders(), FOLDER_RULE),
        template="a photo of a {}, a type of texture.",
        zeroshot_template="{} texture.",
        fewshot_reg_weight=8.0,
        folder="dtd",
        tree="dtd/\n|-- images/          banded/banded_0002.jpg, ...\n`-- split_zhou_DescribableTextures.json",
        sources="images: dtd-r1.0.1.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/dtd/\n"
        f"split_zhou_DescribableTextures.json: CoOp, {_drive('1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x')}",
        group="all",
    ),
    DatasetRecord(
        name="eurosat",
        title="EuroSAT",
        reader=SplitFileReader("2750", "split_zhou_EuroSAT.json", split_class_folders(), FOLDER_RULE, EUROSAT_RENAMES),
        template="a centered satellite photo of {}.",
        folder="eurosat",
        tree="eurosat/\n"
        "|-- 2750/            AnnualCrop/AnnualCrop_1.jpg, Forest/, ... (10 class folders)\n"
        "`-- split_zhou_EuroSAT.json",
        sources="images: EuroSAT.zip (RGB) from https://github.com/phelber/EuroSAT\n"
        f"split_zhou_EuroSAT.json: CoOp, {_drive('1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o')}",
        group="all",
    ),
    DatasetRecord(
        name="ucf101",
        title="UCF101",
        reader=SplitFileReader("UCF-101-midframes", "split_zhou_UCF101.json", split_ucf101, TRAINVAL_RULE),
        template="a photo of a person doing {}.",
        folder="ucf101",
        tree="ucf101/\n"
        "|-- UCF-101-midframes/   Apply_Eye_Makeup/v_ApplyEyeMakeup_g01_c01.jpg, ...\n"
        "|-- ucfTrainTestlist/    classInd.txt, trainlist01.txt, testlist01.txt (only for --make-split)\n"
        "`-- split_zhou_UCF101.json",
        sources=f"middle frames: UCF-101-midframes.zip from CoOp, {_drive('10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O')}\n"
        "ucfTrainTestlist: https://www.crcv.ucf.edu/data/UCF101.php\n"
        f"split_zhou_UCF101.json: CoOp, {_drive('1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y')}",
        group="all",
    ),
    # ------------------------------------------------------------------------ the 4 ImageNet variants (test only)
    DatasetRecord(
        name="imagenetv2",
        title="ImageNetV2 (matched frequency)",
        reader=read_imagenetv2,
        folder="imagenetv2",
        tree="imagenetv2/\n"
        "|-- imagenetv2-matched-frequency-format-val/   0/, 1/, ..., 999/ (folder = ImageNet label)\n"
        "`-- classnames.txt   optional (a copy of imagenet/classnames.txt)",
        sources="images: imagenetv2-matched-frequency.tar.gz from https://github.com/modestyachts/ImageNetV2\n"
        "classnames.txt: copy imagenet/classnames.txt; test only",
        group="imagenet-variants",
        test_only=True,
    ),
    DatasetRecord(
        name="imagenet_sketch",
        title="ImageNet-Sketch",
        reader=read_imagenet_sketch,
        folder="imagenet-sketch",
        tree="imagenet-sketch/\n"
        "|-- images/          1,000 wnid folders: n01440764/sketch_0.JPEG, ...\n"
        "`-- classnames.txt   optional (a copy of imagenet/classnames.txt)",
        sources="images: https://github.com/HaohanWang/ImageNet-Sketch "
        "(extract so that images/ holds the wnid folders)\n"
        "classnames.txt: copy imagenet/classnames.txt; test only",
        group="imagenet-variants",
        test_only=True,
    ),
    DatasetRecord(
        name="imagenet_a",
        title="ImageNet-A",
        reader=WnidSubsetReader("imagenet-a", imagenet_a_wnids),
        folder="imagenet-adversarial",
        tree="imagenet-adversarial/\n"
        "|-- imagenet-a/      200 wnid folders: n01498041/0.000116_digital clock _ digital clock_0.865662.jpg,"
        " ...\n"
        "|                    (README.txt is ignored)\n"
        "`-- classnames.txt   optional (a copy of imagenet/classnames.txt)",
        sources="images: imagenet-a.tar from https://github.com/hendrycks/natural-adv-examples\n"
        "classnames.txt: copy imagenet/classnames.txt; test only, labels 0..199 over its 200 classes",
        group="imagenet-variants",
        test_only=True,
    ),
    DatasetRecord(
        name="imagenet_r",
        title="ImageNet-R",
        reader=WnidSubsetReader("imagenet-r", imagenet_r_wnids),
        folder="imagenet-rendition",
        tree="imagenet-rendition/\n"
        "|-- imagenet-r/      200 wnid folders: n01443537/art_0.jpg, ...\n"
        "`-- classnames.txt   optional (a copy of imagenet/classnames.txt)",
        sources="images: imagenet-r.tar from https://github.com/hendrycks/imagenet-r\n"
        "classnames.txt: copy imagenet/classnames.txt; test only, labels 0..199 over its 200 classes",
        group="imagenet-variants",
        test_only=True,
    ),
)


def _groups(records: dict[str, DatasetRecord]) -> dict[str, tuple[str, ...]]:
    groups: dict[str, tuple[str, ...]] = {}
    for record in records.values():
        if record.group:
            groups[record.group] = (*groups.get(record.group, ()), record.name)
    return groups


# The --datasets groups, in the records' order: "all" = the 11 benchmarks of base-to-new, few-shot and
# cross-dataset transfer in the papers' table order; "imagenet-variants" = the targets of domain generalisation.
GROUPS: dict[str, tuple[str, ...]] = _groups(RECORDS)
BENCHMARKS = GROUPS["all"]
IMAGENET_VARIANTS = GROUPS["imagenet-variants"]
