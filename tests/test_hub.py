"""Pushing the best model to the hub: the hub is unreachable here, so HfApi is faked."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import huggingface_hub
import pytest

from seg_tune.errors import SegTuneError
from seg_tune.hub import push_best_model


class _FakeApi:
    calls: ClassVar[list[tuple[str, dict]]] = []
    fail = False

    def create_repo(self, repo_id: str, **kw: object) -> None:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))

    def upload_folder(self, **kw: object) -> object:
        if self.fail:
            raise OSError("connection refused\nmore detail")
        self.calls.append(("upload_folder", dict(kw)))
        return type("Info", (), {"commit_url": f"https://hf.co/{kw['repo_id']}/commit/1"})()


def test_push_creates_a_private_repo_and_uploads_the_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeApi)
    _FakeApi.calls, _FakeApi.fail = [], False
    url = push_best_model(tmp_path, "me/seg", private=True)
    assert url == "https://hf.co/me/seg/commit/1"
    (create, created), (upload, uploaded) = _FakeApi.calls
    assert create == "create_repo" and created["private"] is True and created["exist_ok"] is True
    assert upload == "upload_folder" and uploaded["folder_path"] == str(tmp_path)


def test_push_failure_is_one_line_and_keeps_the_model(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeApi)
    _FakeApi.calls, _FakeApi.fail = [], True
    folder = tmp_path / "best_model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(SegTuneError) as info:
        push_best_model(folder, "me/seg")
    message = str(info.value)
    assert "\n" not in message and "connection refused" in message
    # the folder it names is the one given, still there with its files, and how to push it later
    assert f"the model stays in {folder} " in message
    assert f"`huggingface-cli upload me/seg {folder}`" in message
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors"]
    assert (folder / "model.safetensors").read_bytes() == b"weights"
