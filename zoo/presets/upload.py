"""Publish a zoo preset to the Hugging Face Hub."""

from __future__ import annotations

import os
from pathlib import Path

from zoo.core.errors import NetworkError, PresetError


def validate_preset(directory: Path) -> None:
    """Check a preset is complete and loadable before it is shared.

    Verifies metadata.json, every recorded sha256, and that the backbone,
    tokenizer, preprocessor and task configs name classes zoo knows.

    Raises:
        PresetError: what is wrong, and how to fix it.
    """
    from zoo.core import preset_classes, preset_io
    from zoo.core.backbone import Backbone
    from zoo.core.preprocessor import Preprocessor
    from zoo.core.task import Task
    from zoo.core.tokenizer import Tokenizer

    directory = Path(directory)
    if not directory.is_dir():
        raise PresetError(f"{directory} is not a directory. Fix: pass a preset directory.")
    preset_io.verify_preset(directory)
    data = preset_io.read_json(directory, preset_io.CONFIG_FILE)
    preset_classes.get_class(data, Backbone, directory, "backbone")
    for name, base in ((preset_io.TOKENIZER_FILE, Tokenizer),
                       (preset_io.PREPROCESSOR_FILE, Preprocessor),
                       (preset_io.TASK_FILE, Task)):
        if (directory / name).is_file():
            preset_classes.get_class(preset_io.read_json(directory, name), base, directory, name)


def upload(preset_dir: str | os.PathLike, handle: str, private: bool = False,
           commit_message: str = "Upload zoo preset") -> str:
    """Validate `preset_dir`, then upload it to `hf://org/repo`.

    Nothing is sent unless validation passes. Offline (or with
    `HF_HUB_OFFLINE` set) it fails at once, without retries.

    Args:
        preset_dir: a directory written by `save_to_preset`.
        handle: `hf://org/repo` (created if missing).
        private: create the repo as private.
        commit_message: the Hub commit message.

    Returns:
        The commit URL reported by the Hub.

    Raises:
        PresetError: the handle or the preset is not valid.
        NetworkError: the Hub cannot be reached, or refused the upload.

    Example:

    >>> import zoo.presets
    >>> zoo.presets.upload("./my_preset", "hf://me/my-bert")  # doctest: +SKIP
    """
    from zoo.presets.handles import hf_unreachable

    repo_id, revision = parse_upload_handle(handle)
    validate_preset(Path(preset_dir))
    reason = hf_unreachable()
    if reason is not None:
        raise NetworkError(f"Cannot upload to {handle}: {reason}. Fix: connect to the network "
                       "(and unset HF_HUB_OFFLINE), then upload again.")
    import huggingface_hub

    api = huggingface_hub.HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(preset_dir),
                                 commit_message=commit_message, revision=revision)
    except Exception as e:  # HTTP, authentication and connection errors come in many types
        first_line = (str(e).splitlines() or [""])[0]
        raise NetworkError(f"Uploading to {handle} failed: {type(e).__name__}: {first_line}. Fix: "
                       "log in (hf auth login, or set HF_TOKEN) with write access to "
                       f"{repo_id}, then upload again.") from e
    return str(getattr(info, "commit_url", info))


def parse_upload_handle(handle: str) -> tuple[str, str | None]:
    """`hf://org/repo[@revision]` -> (repo_id, revision), for an upload target.

    Raises:
        PresetError: `handle` is not `hf://org/repo` (the message says how to write it).
    """
    from zoo.presets.handles import parse_hf

    if not isinstance(handle, str) or not handle.startswith("hf://"):
        raise PresetError(f"Upload target {handle!r} is not hf://org/repo. Fix: pass "
                          "hf://your-name/repo-name.")
    return parse_hf(handle)
