"""Preset handles, the catalog, the local hub, and upload.

Example:

>>> import zoo.presets
>>> "all_minilm_l6_v2" in zoo.presets.list()
True
>>> zoo.presets.info("all_minilm_l6_v2")["family"]
'bert'
"""

from __future__ import annotations

from typing import Any

from zoo.core import preset_handlers as _preset_handlers
from zoo.presets import hub as _hub
from zoo.presets.catalog import catalog
from zoo.presets.formats import detect_format
from zoo.presets.handles import resolve
from zoo.presets.hub import zoo_home
from zoo.presets.upload import upload, validate_preset

# zoo.core's from_preset resolves every handle through this layer (it never
# imports it: zoo.core sits below zoo.presets).
_preset_handlers.install(resolve=resolve, hub_hint=_hub.repair_hint)


def list_presets(family: str | None = None) -> list[str]:
    """Names of the catalog's presets, optionally of one family (e.g. "bert")."""
    return sorted(n for n, e in catalog().items() if family is None or e["family"] == family)


def info(name: str) -> dict[str, Any]:
    """A catalog entry: family, description, params, sources, license, and
    `cached`: whether a converted copy of some source is already in the hub."""
    from zoo.core.errors import PresetNotFoundError
    from zoo.presets.catalog import unknown_name_message
    from zoo.presets.hub import cached_preset_path

    entries = catalog()
    if name not in entries:
        raise PresetNotFoundError(unknown_name_message(name))
    entry = dict(entries[name])
    entry["cached"] = any(cached_preset_path(s).is_dir() for s in entry["sources"])
    return entry


def available_offline(name: str) -> bool:
    """Whether preset `name` loads with no network: a converted copy is in the
    hub, or one of its sources is a `pkg://` package that is installed."""
    import importlib.util

    entry = info(name)
    if entry["cached"]:
        return True
    for source in entry["sources"]:
        if source.startswith("pkg://"):
            package = source[len("pkg://"):].split("/", 1)[0]
            if importlib.util.find_spec(package) is not None:
                return True
    return False


list = list_presets  # noqa: A001  (the documented name is zoo.presets.list)

__all__ = ["available_offline", "detect_format", "info", "list", "list_presets", "resolve", "upload",
           "validate_preset", "zoo_home"]
