"""clipfit-data fetch against a local HTTP server (127.0.0.1, with Range requests) serving fixture archives.

The archives are built here in the real published layouts (DTD's tar.gz with its dtd/ folder, Caltech101's zip
holding 101_ObjectCategories.tar.gz and macOS junk, EuroSAT's zip with 2750/), from the miniature dataset trees
of tests/fixture_trees.py; the records are the catalog's own, with the fixture archives' sha256 in place of the
published one. Nothing here reaches the network: every file comes through --mirror.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
from fixture_trees import build

from clipfit.cli import data as data_cli
from clipfit.data import catalog
from clipfit.data.fetch import WORK_DIR

DTD_SPLIT = "split_zhou_DescribableTextures.json"


# ----------------------------------------------------------------------------- the server


class Server:
    """Files by URL path; ``cut[path] = n`` breaks the next answer for ``path`` after n bytes (once)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.cut: dict[str, int] = {}
        self.ranges = True  # False: ignore Range headers, as some servers do
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.url = ""

    def put(self, dataset: str, name: str, data: bytes, kind: str = "application/octet-stream") -> None:
        self.files[f"/{dataset}/{name}"] = (data, kind)

    def got(self, dataset: str, name: str) -> list[str | None]:
        """The Range headers of the requests for one file (None: a request from the start)."""
        return [r for p, r in self.requests if p == f"/{dataset}/{name}"]


@pytest.fixture
def server():
    state = Server()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            header = self.headers.get("Range")
            state.requests.append((self.path, header))
            if self.path not in state.files:
                self.send_error(404)
                return
            data, kind = state.files[self.path]
            start = int(header.split("=")[1].split("-")[0]) if header and state.ranges else 0
            if start >= len(data) and start:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            body = data[start:]
            cut = state.cut.pop(self.path, None)
            self.wfile.write(body if cut is None else body[:cut])  # a cut answer: the connection closes early

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


# ----------------------------------------------------------------------------- fixture archives


def _tar_gz(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _files(folder: Path, under: str, prefix: str) -> dict[str, bytes]:
    """Every file below ``folder/under`` as ``prefix + path below folder/under``."""
    base = folder / under
    return {prefix + str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def dtd_files(src: Path, extra: dict[str, bytes] | None = None, links=None) -> dict[str, bytes]:
    """dtd-r1.0.1.tar.gz as published (dtd/images/<class>/..., dtd/labels/, dtd/imdb/) and CoOp's split file."""
    tree = build(src, "dtd")
    members = {
        **_files(tree.folder, "images", "dtd/images/"),
        "dtd/labels/train1.txt": b"banded/banded_0002.jpg\n",
        "dtd/imdb/imdb.mat": b"MATLAB 5.0",
        **(extra or {}),
    }
    return {"dtd-r1.0.1.tar.gz": _tar_gz(members, links), DTD_SPLIT: (tree.folder / DTD_SPLIT).read_bytes()}


def caltech_files(src: Path) -> dict[str, bytes]:
    """caltech-101.zip as published: caltech-101/101_ObjectCategories.tar.gz inside, beside other files and junk."""
    tree = build(src, "caltech101")
    inner = _tar_gz(_files(tree.folder, "101_ObjectCategories", "101_ObjectCategories/"))
    outer = _zip(
        {
            "caltech-101/101_ObjectCategories.tar.gz": inner,
            "caltech-101/Annotations.tar": b"not needed",
            "caltech-101/show_annotation.m": b"% not needed",
            "__MACOSX/caltech-101/._101_ObjectCategories.tar.gz": b"junk",
        }
    )
    return {
        "caltech-101.zip": outer,
        "split_zhou_Caltech101.json": (tree.folder / "split_zhou_Caltech101.json").read_bytes(),
    }


def publish(server: Server, monkeypatch, dataset: str, files: dict[str, bytes], sha256: dict[str, str] | None = None):
    """Serve ``files`` as the dataset's downloads; its record gets their sha256 (or ``sha256``'s) as published."""
    record = catalog.RECORDS[dataset]
    downloads = []
    for download in record.downloads:
        if download.sha256 or download.md5:
            digest = (sha256 or {}).get(download.filename) or hashlib.sha256(files[download.filename]).hexdigest()
            download = dataclasses.replace(download, sha256=digest, md5="", size=len(files[download.filename]))
        downloads.append(download)
    monkeypatch.setitem(catalog.RECORDS, dataset, dataclasses.replace(record, downloads=tuple(downloads)))
    for name, data in files.items():
        server.put(dataset, name, data, "application/json" if name.endswith(".json") else "application/x-gzip")


def fetch(server: Server, root: Path, *names: str) -> int:
    return data_cli.main(["fetch", *names, "--root", str(root), "--mirror", server.url])


# ----------------------------------------------------------------------------- tests


def test_fetch_unpacks_into_coop_layout_and_agrees_with_check(server, monkeypatch, tmp_path, capsys):
    publish(server, monkeypatch, "dtd", dtd_files(tmp_path / "src-dtd"))
    publish(server, monkeypatch, "caltech101", caltech_files(tmp_path / "src-caltech"))
    root = tmp_path / "data"
    root.mkdir()
    assert data_cli.main(["check", "--root", str(root), "--datasets", "dtd", "caltech101", "--pretrained", "none"]) == 2
    capsys.readouterr()

    assert fetch(server, root, "dtd", "caltech101") == 0
    out = capsys.readouterr().out
    assert "dtd         ready    3 classes" in out and "caltech101  ready    4 classes" in out
    assert f"next:\n  clipfit-train --datasets dtd caltech101 --data-root {root}" in out
    # CoOp's tree: the images, DTD's label files, the split files; nothing else (junk, other archive members)
    assert (root / "dtd" / "images" / "banded" / "banded_train00.jpg").is_file()
    assert {p.name for p in (root / "dtd").iterdir()} == {"images", "labels", "imdb", DTD_SPLIT}
    assert {p.name for p in (root / "caltech-101").iterdir()} == {"101_ObjectCategories", "split_zhou_Caltech101.json"}
    assert not (root / WORK_DIR).exists()  # archives removed once unpacked
    assert data_cli.main(["check", "--root", str(root), "--datasets", "dtd", "caltech101", "--pretrained", "none"]) == 0

    # the same command again downloads nothing
    requests = len(server.requests)
    assert fetch(server, root, "dtd", "caltech101") == 0
    assert len(server.requests) == requests
    assert "already there: dtd-r1.0.1.tar.gz, split_zhou_DescribableTextures.json" in capsys.readouterr().out


def test_an_interrupted_download_resumes_where_it_stopped(server, monkeypatch, tmp_path):
    files = dtd_files(tmp_path / "src")
    publish(server, monkeypatch, "dtd", files)
    archive = files["dtd-r1.0.1.tar.gz"]
    server.cut["/dtd/dtd-r1.0.1.tar.gz"] = len(archive) // 3  # the connection breaks after a third
    assert fetch(server, tmp_path / "data", "dtd") == 0
    assert server.got("dtd", "dtd-r1.0.1.tar.gz") == [None, f"bytes={len(archive) // 3}-"]
    assert (tmp_path / "data" / "dtd" / "images" / "zigzagged" / "zigzagged_test01.jpg").is_file()


def test_a_part_file_of_an_earlier_run_is_resumed_or_restarted(server, monkeypatch, tmp_path):
    files = dtd_files(tmp_path / "src")
    publish(server, monkeypatch, "dtd", files)
    archive = files["dtd-r1.0.1.tar.gz"]
    for ranges in (True, False):  # a server that cannot resume sends the whole file, which replaces the part
        root = tmp_path / f"data-{ranges}"
        part = root / WORK_DIR / "dtd" / "dtd-r1.0.1.tar.gz.part"
        part.parent.mkdir(parents=True)
        part.write_bytes(archive[:1000])
        server.ranges, server.requests = ranges, []
        assert fetch(server, root, "dtd") == 0
        assert server.got("dtd", "dtd-r1.0.1.tar.gz") == ["bytes=1000-"]
        assert (root / "dtd" / "images" / "banded").is_dir()


def test_a_checksum_mismatch_is_refused_and_the_file_kept_aside(server, monkeypatch, tmp_path, capsys):
    files = dtd_files(tmp_path / "src")
    publish(server, monkeypatch, "dtd", files, sha256={"dtd-r1.0.1.tar.gz": "0" * 64})
    root = tmp_path / "data"
    assert fetch(server, root, "dtd") == 2
    err = capsys.readouterr().err
    got = hashlib.sha256(files["dtd-r1.0.1.tar.gz"]).hexdigest()
    aside = root / WORK_DIR / "dtd" / "dtd-r1.0.1.tar.gz.rejected"
    assert f"dtd-r1.0.1.tar.gz: its sha256 is {got}, but" in err and f"publishes {'0' * 64}" in err
    assert f"Kept aside as {aside}" in err and aside.read_bytes() == files["dtd-r1.0.1.tar.gz"]
    assert not (root / "dtd" / "images").exists()  # nothing of it was used
    assert "Traceback" not in err

    publish(server, monkeypatch, "dtd", files)  # the right checksum: the next run downloads it anew
    assert fetch(server, root, "dtd") == 0
    assert (root / "dtd" / "images" / "banded").is_dir()


@pytest.mark.parametrize(
    "extra, links",
    [
        ({"dtd/images/../../../escaped.txt": b"x"}, None),
        ({"/tmp/clipfit-fetch-escaped.txt": b"x"}, None),
        (None, {"dtd/images/banded/evil.jpg": "../../../../escaped.txt"}),
        (None, {"dtd/images/banded/evil.jpg": "/etc/passwd"}),
    ],
    ids=["dot-dot", "absolute", "link-up", "link-absolute"],
)
def test_an_archive_with_paths_out_of_its_folder_is_refused(server, monkeypatch, tmp_path, capsys, extra, links):
    publish(server, monkeypatch, "dtd", dtd_files(tmp_path / "src", extra, links))
    root = tmp_path / "area" / "data"
    assert fetch(server, root, "dtd") == 2
    err = capsys.readouterr().err
    assert "dtd-r1.0.1.tar.gz holds" in err and "unsafe" in err and "Traceback" not in err
    assert not (root / "dtd" / "images").exists() and not (root / "dtd" / "labels").exists()
    assert not list((tmp_path / "area").rglob("escaped*")) and not Path("/tmp/clipfit-fetch-escaped.txt").exists()
    assert not list((root / WORK_DIR).rglob("*.staging"))  # the staging folder is gone


def test_a_zip_member_out_of_its_folder_is_refused(server, monkeypatch, tmp_path, capsys):
    tree = build(tmp_path / "src", "eurosat")
    members = {**_files(tree.folder, "2750", "2750/"), "2750/../../escaped.txt": b"x"}
    files = {
        "EuroSAT.zip": _zip(members),
        "split_zhou_EuroSAT.json": (tree.folder / "split_zhou_EuroSAT.json").read_bytes(),
    }
    publish(server, monkeypatch, "eurosat", files)
    assert fetch(server, tmp_path / "data", "eurosat") == 2
    assert "EuroSAT.zip holds a member outside its folder ('2750/../../escaped.txt')" in capsys.readouterr().err
    assert not (tmp_path / "data" / "eurosat" / "2750").exists() and not list(tmp_path.rglob("escaped.txt"))


def test_a_web_page_instead_of_a_file_says_how_to_get_it_by_hand(server, monkeypatch, tmp_path, capsys):
    files = dtd_files(tmp_path / "src")
    publish(server, monkeypatch, "dtd", files)
    server.put("dtd", DTD_SPLIT, b"<!DOCTYPE html><html>Quota exceeded</html>", "text/html; charset=utf-8")
    root = tmp_path / "data"
    assert fetch(server, root, "dtd") == 2
    err = capsys.readouterr().err
    by_hand = root / WORK_DIR / "dtd" / DTD_SPLIT
    assert f"answered with a web page instead of {DTD_SPLIT}" in err
    assert f"download {DTD_SPLIT} from https://drive.google.com/file/d/" in err and f"save it as {by_hand}" in err
    assert (root / "dtd" / "images").is_dir()  # the archive was fetched all the same

    by_hand.write_bytes(files[DTD_SPLIT])  # downloaded by hand: the same command checks it and puts it in place
    requests = len(server.requests)
    assert fetch(server, root, "dtd") == 0
    assert len(server.requests) == requests and json.loads((root / "dtd" / DTD_SPLIT).read_text())["train"]


def test_a_split_file_that_is_not_one_is_refused(server, monkeypatch, tmp_path, capsys):
    publish(server, monkeypatch, "dtd", {**dtd_files(tmp_path / "src"), DTD_SPLIT: b'{"train": 3}'})
    assert fetch(server, tmp_path / "data", "dtd") == 2
    assert f"{DTD_SPLIT} is not a split file" in capsys.readouterr().err
    assert not (tmp_path / "data" / "dtd" / DTD_SPLIT).exists()


def test_what_must_be_fetched_by_hand_is_listed_with_instructions(server, monkeypatch, tmp_path, capsys):
    tree = build(tmp_path / "src", "stanford_cars")
    publish(
        server,
        monkeypatch,
        "stanford_cars",
        {"split_zhou_StanfordCars.json": (tree.folder / "split_zhou_StanfordCars.json").read_bytes()},
    )
    root = tmp_path / "data"
    assert fetch(server, root, "stanford_cars") == 2
    captured = capsys.readouterr()
    assert (root / "stanford_cars" / "split_zhou_StanfordCars.json").is_file()
    assert "stanford_cars  MISSING" in captured.out
    assert "must be fetched by hand:\n  stanford_cars (stanford_cars/): cars_train/ and cars_test/" in captured.out
    assert "not ready: 1 of 1 dataset(s)" in captured.err


@pytest.mark.parametrize(
    "name, message",
    [
        ("dtdd", "cannot fetch 'dtdd' (not a dataset clipfit knows); clipfit-data fetch knows: imagenet, caltech101"),
        ("shapes", "'shapes' is generated by clipfit: nothing to fetch"),
        ("folder:photos", "cannot fetch 'folder:"),
    ],
)
def test_an_unknown_name_is_a_clear_error_before_any_download(server, tmp_path, capsys, name, message):
    assert fetch(server, tmp_path / "data", "dtd", name) == 2
    err = capsys.readouterr().err
    assert message in err and "groups: all, imagenet-variants" in err and "Traceback" not in err
    assert server.requests == []  # checked before dtd was downloaded
