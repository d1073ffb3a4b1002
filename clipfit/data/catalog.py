"""Every dataset clipfit knows, one :class:`~clipfit.data.records.DatasetRecord` each (data).

The shapes world (generated, :mod:`clipfit.data.shapes`), the 11 CoOp benchmarks of base-to-new,
few-shot and cross-dataset transfer (in the papers' table order) and the 4 ImageNet variants of
domain generalisation (PAPER.md section 5). Each benchmark lives in its own folder under one data
root, in the layout of CoOp's DATASETS.md, with CoOp's split file, class-name rules and prompt
template; the epochs and few-shot lambda are the paper's (PAPER.md section 3: 10 epochs for
ImageNet and Food101, lambda 8 on DTD and SUN397; the record defaults elsewhere).

Each benchmark record also lists the files ``clipfit-data fetch`` downloads (:class:`Download`: the
published URL, the checksum published with it, where its contents go) and what must be fetched by
hand. Checksums: md5 from torchvision's dataset classes (torchvision 0.29), sha256 and sizes from
tensorflow_datasets' URL checksum files, each for the URL named here. CoOp's split files, its class-name
files and UCF101's middle frames are on Google Drive without a published checksum: fetch checks that a
split file reads as one and that a zip's CRCs hold, and prints the sha256 it got.

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
from clipfit.data.records import DatasetRecord, Download
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


def _drive_file(file_id: str, filename: str, extract: tuple[tuple[str, str], ...] = ()) -> Download:
    """A file CoOp shares on Google Drive, through Drive's direct-download address (no checksum is published)."""
    return Download(
        url=f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t",
        filename=filename,
        extract=extract,
        page=_drive(file_id),
    )


TORCHVISION, TFDS = "torchvision", "tensorflow_datasets"
BOTH = "torchvision (md5) and tensorflow_datasets (sha256)"


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
        downloads=(_drive_file("1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF", "classnames.txt"),),
        by_hand="the ILSVRC-2012 images: sign in at https://image-net.org, accept its terms of access and download "
        "ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz (no script may do it for "
        "you); torchvision.datasets.ImageNet(DIR, split='train') and (DIR, split='val') unpack them into DIR/train "
        "and DIR/val, one folder per wnid (val sorted by the devkit's labels): move or link those two folders to "
        "imagenet/images/train and imagenet/images/val",
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
        sources="images: 101_ObjectCategories.tar.gz, inside caltech-101.zip from "
        "https://data.caltech.edu/records/mzrjq-6wc02\n"
        f"split_zhou_Caltech101.json: CoOp, {_drive('1hyarUivQE36mY6jSomru6Fjd-JzwcCzN')}",
        group="all",
        downloads=(
            Download(
                url="https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
                filename="caltech-101.zip",
                sha256="331234750fc7f77520e50d9565e8b6907b03565e30320da1401130db08c61f91",
                md5="3138e1922a9193bfa496528edbbc45d0",
                checksum_source=BOTH,
                size=137414764,
                inner="caltech-101/101_ObjectCategories.tar.gz",
                extract=(("101_ObjectCategories/", "101_ObjectCategories/"),),
            ),
            _drive_file("1hyarUivQE36mY6jSomru6Fjd-JzwcCzN", "split_zhou_Caltech101.json"),
        ),
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
        downloads=(
            Download(
                url="https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
                filename="images.tar.gz",
                md5="5c4f3ee8e5d25df40f4fd59a7f44e54c",
                checksum_source=TORCHVISION,
                size=791918971,
                extract=(("images/", "images/"),),
            ),
            Download(
                url="https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",
                filename="annotations.tar.gz",
                md5="95a8c909bbe2e81eed6a22bccdf3f68f",
                checksum_source=TORCHVISION,
                size=19173078,
                extract=(("annotations/", "annotations/"),),
            ),
            _drive_file("1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs", "split_zhou_OxfordPets.json"),
        ),
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
        downloads=(_drive_file("1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT", "split_zhou_StanfordCars.json"),),
        by_hand="cars_train/ and cars_test/ (and devkit/, cars_test_annos_withlabels.mat for --make-split): the "
        "original host (ai.stanford.edu/~jkrause/cars) no longer serves them and torchvision no longer downloads "
        "them; copies of the original archives are shared elsewhere (e.g. on Kaggle). Unpack them so that "
        "stanford_cars/cars_train/00001.jpg and stanford_cars/cars_test/00001.jpg exist (some copies nest the "
        "images one folder deeper, cars_train/cars_train/)",
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
        downloads=(
            Download(
                url="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz",
                filename="102flowers.tgz",
                sha256="2d01ecc807db462958cfe3d92f57a8c252b4abd240eb955770201e45f783b246",
                md5="52808999861908f626f3c1f4e79d11fa",
                checksum_source=BOTH,
                size=344862509,
                extract=(("jpg/", "jpg/"),),
            ),
            Download(
                url="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/imagelabels.mat",
                filename="imagelabels.mat",
                sha256="4903e94206bac23bf772aadf06451916df56b58fc483a62db32a97b82656651d",
                md5="e0620be6f572b9609742df49c70aed4d",
                checksum_source=BOTH,
                size=502,
            ),
            _drive_file("1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0", "cat_to_name.json"),
            _drive_file("1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT", "split_zhou_OxfordFlowers.json"),
        ),
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
        downloads=(
            Download(
                url="http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
                filename="food-101.tar.gz",
                sha256="d97d15e438b7f4498f96086a4f7e2fa42a32f2712e87d3295441b2b6314053a4",
                md5="85eeb15f3717b99a5da872d97d918f87",
                checksum_source=BOTH,
                size=4996278331,
                extract=(("food-101/images/", "images/"), ("food-101/meta/", "meta/")),
            ),
            _drive_file("1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl", "split_zhou_Food101.json"),
        ),
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
        downloads=(
            Download(
                url="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
                filename="fgvc-aircraft-2013b.tar.gz",
                sha256="d5f68b1b81d6d7831eb9d5c5517074176b5dfbce6bcb43dc14ed1c66a87b8d75",
                checksum_source=TFDS,
                size=2770575360,
                extract=tuple(
                    (f"fgvc-aircraft-2013b/data/{name}", name)
                    for name in (
                        "images/",
                        "variants.txt",
                        "images_variant_train.txt",
                        "images_variant_val.txt",
                        "images_variant_test.txt",
                    )
                ),
            ),
        ),
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
        downloads=(
            Download(
                url="http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",
                filename="SUN397.tar.gz",
                sha256="f404130965a7ad77bed5ececc71e720ab50f3cc1e1bb257257610d38f3b928ec",
                md5="8ca2778205c41d23104230ba66911c7a",
                checksum_source=BOTH,
                size=39077296924,
                extract=(("SUN397/", "SUN397/"),),
            ),
            _drive_file("1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq", "split_zhou_SUN397.json"),
        ),
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
        downloads=(
            Download(
                url="https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
                filename="dtd-r1.0.1.tar.gz",
                sha256="e42855a52a4950a3b59612834602aa253914755c95b0cff9ead6d07395f8e205",
                md5="fff73e5086ae6bdbea199a49dfb8a4c1",
                checksum_source=BOTH,
                size=625239812,
                extract=(("dtd/images/", "images/"), ("dtd/imdb/", "imdb/"), ("dtd/labels/", "labels/")),
            ),
            _drive_file("1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x", "split_zhou_DescribableTextures.json"),
        ),
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
        downloads=(
            Download(  # torchvision's copy (the original host, madm.dfki.de, is gone)
                url="https://huggingface.co/datasets/torchgeo/eurosat/resolve/"
                "c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip",
                filename="EuroSAT.zip",
                md5="c8fa014336c82ac7804f0398fcb19387",
                checksum_source=TORCHVISION,
                extract=(("2750/", "2750/"),),
            ),
            _drive_file("1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o", "split_zhou_EuroSAT.json"),
        ),
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
        downloads=(
            _drive_file(
                "10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O",
                "UCF-101-midframes.zip",
                extract=(("UCF-101-midframes/", "UCF-101-midframes/"),),
            ),
            _drive_file("1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y", "split_zhou_UCF101.json"),
        ),
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
        downloads=(
            Download(
                url="https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/imagenetv2-matched-frequency.tar.gz",
                filename="imagenetv2-matched-frequency.tar.gz",
                sha256="f0c37fdf925916b19ea1323cd9a2208cdb6959ba2c32eef2a7fc393835c9ca7c",
                checksum_source=TFDS,
                size=1264079360,
                extract=(("imagenetv2-matched-frequency-format-val/", "imagenetv2-matched-frequency-format-val/"),),
            ),
        ),
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
        downloads=(
            Download(  # the authors' Google Drive file, as tensorflow_datasets fetches it
                url="https://drive.usercontent.google.com/download?id=1Mj0i5HBthqH1p_yeXzsg22gZduvgoNeA"
                "&export=download&confirm=t",
                filename="ImageNet-Sketch.zip",
                sha256="4d3ce6b82a7c48aabf14aeac105eb533e75707f152cc858f55bfc022031a72ed",
                checksum_source=TFDS,
                size=7593573012,
                extract=(("sketch/", "images/"),),
                page=_drive("1Mj0i5HBthqH1p_yeXzsg22gZduvgoNeA"),
            ),
        ),
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
        downloads=(
            Download(
                url="https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar",
                filename="imagenet-a.tar",
                sha256="3bb3632277e6ba6392ea64c02ddbf4dd2266c9caffd6bc09c9656d28f012589e",
                checksum_source=TFDS,
                size=687552512,
                extract=(("imagenet-a/", "imagenet-a/"),),
            ),
        ),
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
        downloads=(
            Download(
                url="https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar",
                filename="imagenet-r.tar",
                sha256="18c6bf493b39a0d975d48e587437f562caab9c52ae6327dcfa9dd8eb54aa1b52",
                checksum_source=TFDS,
                size=2191079936,
                extract=(("imagenet-r/", "imagenet-r/"),),
            ),
        ),
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
