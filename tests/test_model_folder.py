"""``models/vtoonify`` is registered with ComfyUI also when the user's ``extra_model_paths.yaml`` defines a
``vtoonify:`` folder (issue 20, item 6): ComfyUI reads that file before it loads custom nodes, so the
pack finds the folder name taken and used to skip its own folder.

Here with the fake ComfyUI (tests/comfy_stub.py); the real server with an extra_model_paths.yaml is
in tests/host/test_frontends.py.
"""
from __future__ import annotations

import os


def test_models_vtoonify_is_added_after_the_users_extra_folder(fake_comfy_empty, tmp_path, monkeypatch):
    loader = fake_comfy_empty.module("nodes.loader")
    fp = loader._comfy.folder_paths()
    ours = os.path.join(fp.models_dir, "vtoonify")
    extra = tmp_path / "shared_models" / "vtoonify"
    (extra / "vtoonify_d_arcane").mkdir(parents=True)
    (extra / "vtoonify_d_arcane" / "my_arcane.pt").write_bytes(b"-")
    (fake_comfy_empty.models / "mine_in_models.pt").write_bytes(b"-")
    # what ComfyUI's extra_model_paths.yaml loading leaves before the pack is imported
    monkeypatch.setitem(fp.folder_names_and_paths, "vtoonify", ([str(extra)], set()))
    loader.register_folder()
    assert fp.get_folder_paths("vtoonify") == [str(extra), ours]
    choices = loader.checkpoint_choices()
    assert os.path.join("vtoonify_d_arcane", "my_arcane.pt") in choices and "mine_in_models.pt" in choices
    assert fp.get_full_path("vtoonify", "mine_in_models.pt") == os.path.join(ours, "mine_in_models.pt")
    # downloads and messages keep pointing at the first folder (the user's choice)
    assert loader.folder_hint() == str(extra)
    loader.register_folder()  # again (every queue-time check calls it): listed once
    assert fp.get_folder_paths("vtoonify") == [str(extra), ours]
    # the user listed models/vtoonify themselves, spelled differently: not added a second time
    monkeypatch.setitem(fp.folder_names_and_paths, "vtoonify", ([str(extra), ours + os.sep], set()))
    loader.register_folder()
    assert fp.get_folder_paths("vtoonify") == [str(extra), ours + os.sep]


def test_models_vtoonify_is_registered_when_nothing_is(fake_comfy_empty, monkeypatch):
    loader = fake_comfy_empty.module("nodes.loader")
    fp = loader._comfy.folder_paths()
    monkeypatch.delitem(fp.folder_names_and_paths, "vtoonify")
    assert loader.checkpoint_choices() == sorted(os.path.normpath(n) for n in loader.OFFICIAL_CHECKPOINTS)
    loader.register_folder()
    assert fp.get_folder_paths("vtoonify") == [os.path.join(fp.models_dir, "vtoonify")]
