"""The Hugging Face Hub without a network: push_to_hub against a recording HfApi, clipfit.load("hf-hub:...")
from a private Hugging Face cache laid out as snapshot_download leaves it (refs/main + snapshots/<commit>/)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar

import huggingface_hub
import huggingface_hub.constants
import pytest
import torch
from hf_cache import COMMIT
from trained_runs import fake_run, shapes_pngs

import clipfit
from clipfit.cli import export as export_cli
from clipfit.hub import HubError, repo_id
from clipfit.models import build_model


class RecordingApi:
    """huggingface_hub.HfApi's create_repo and upload_folder, recorded (with the files present at upload)."""

    calls: ClassVar[list[tuple[str, dict]]] = []

    def __init__(self, token=None) -> None:
        self.token = token

    def create_repo(self, repo_id, **kwargs):
        RecordingApi.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        files = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())
        RecordingApi.calls.append(("upload_folder", {**kwargs, "files": files}))


@pytest.fixture
def recording_api(monkeypatch):
    RecordingApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    return RecordingApi


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from safetensors.torch import save_file

    torch.manual_seed(1234)
    weights = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in build_model("clipfit-tiny", "none").model.state_dict().items()}, weights)
    return fake_run(tmp_path_factory.mktemp("runs") / "clipfit", str(weights), "clipfit")


def test_push_to_hub_creates_the_repository_and_uploads_the_export(run, recording_api):
    url = clipfit.load(run).push_to_hub("me/tiny-clipfit", private=True)
    assert url == "https://huggingface.co/me/tiny-clipfit"
    (create, created), (upload, uploaded) = recording_api.calls
    assert create == "create_repo" and created["repo_id"] == "me/tiny-clipfit"
    assert created["private"] is True and created["exist_ok"] is True
    assert upload == "upload_folder" and uploaded["repo_id"] == "me/tiny-clipfit"
    assert uploaded["files"] == [
        "README.md", "clipfit_config.json", "clipfit_delta.safetensors", "open_clip_config.json",
        "open_clip_model.safetensors",
    ]  # fmt: skip


def test_the_delta_alone_is_pushed_with_merged_false(run, recording_api):
    clipfit.load(run).push_to_hub("me/tiny-delta", merged=False)
    assert recording_api.calls[-1][1]["files"] == ["README.md", "clipfit_config.json", "clipfit_delta.safetensors"]


def test_clipfit_export_pushes_with_the_flag(run, recording_api, tmp_path, capsys):
    argv = [str(run), "--out", str(tmp_path / "export"), "--push-to-hub", "hf-hub:me/tiny", "-q"]
    assert export_cli.main(argv) == 0
    assert [name for name, _ in recording_api.calls] == ["create_repo", "upload_folder"]
    assert 'clipfit.load("hf-hub:me/tiny")' in capsys.readouterr().out
    assert 'clipfit.load("hf-hub:me/tiny")' in (tmp_path / "export" / "README.md").read_text()


def test_a_failed_push_says_how_to_log_in(run, monkeypatch):
    class Refusing(RecordingApi):
        def create_repo(self, repo_id, **kwargs):
            raise PermissionError("401 Unauthorized")

    monkeypatch.setattr(huggingface_hub, "HfApi", Refusing)
    with pytest.raises(HubError, match="huggingface-cli login"):
        clipfit.load(run).push_to_hub("me/tiny")


def test_load_from_the_hub_reads_the_cached_snapshot(run, tmp_path, monkeypatch):
    finetuned = clipfit.load(run)
    export = finetuned.export(tmp_path / "export", repo="me/tiny")
    cache = tmp_path / "hf-cache"
    repo = cache / "models--me--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(export.folder, repo / "snapshots" / COMMIT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    images = shapes_pngs(tmp_path / "images", count=3)
    loaded = clipfit.load("hf-hub:me/tiny")
    assert loaded.source == "hf-hub:me/tiny" and loaded.classnames == finetuned.classnames
    assert torch.allclose(loaded.logits(images, ["a cat", "a dog"]), finetuned.logits(images, ["a cat", "a dog"]))
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set and the repository is not in the cache"):
        clipfit.load("hf-hub:me/elsewhere")
    (cache / "models--laion--plain").mkdir()
    shutil.copytree(repo / "refs", cache / "models--laion--plain" / "refs")
    (cache / "models--laion--plain" / "snapshots" / COMMIT).mkdir(parents=True)
    shutil.copy(export.folder / "open_clip_config.json", cache / "models--laion--plain" / "snapshots" / COMMIT)
    with pytest.raises(clipfit.api.LoadError, match=r"not a clipfit export .* open_clip\.create_model"):
        clipfit.load("hf-hub:laion/plain")


@pytest.mark.parametrize("ref", ["hf-hub:", "hf-hub:me", "hf-hub:me/a/b", "me/"])
def test_a_repository_name_must_be_user_slash_repo(ref):
    with pytest.raises(HubError, match="expected hf-hub:USER/REPO"):
        repo_id(ref)
