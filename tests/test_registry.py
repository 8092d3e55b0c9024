"""The typed registry: duplicates, unknown names, wildcards, lazy entries."""

from __future__ import annotations

import pytest

from bench.errors import ConfigError, UnknownNameError
from bench.registry import Registry, natural_key, natural_sorted


def make() -> Registry[int]:
    reg: Registry[int] = Registry("widget")
    for i, name in enumerate(["resnet50", "resnet101", "vit_small_patch16_224", "crf"]):
        reg.register(name, i, summary=f"summary {name}")
    return reg


def test_duplicate_name_is_an_error() -> None:
    reg = make()
    with pytest.raises(ConfigError, match="duplicate widget name 'crf'"):
        reg.register("crf", 9)


def test_unknown_name_suggests_close_matches_and_lists_choices() -> None:
    reg = make()
    with pytest.raises(UnknownNameError) as info:
        reg.get("resnet5")
    msg = str(info.value)
    assert "Did you mean 'resnet50'" in msg
    assert "Choices: crf, resnet50, resnet101, vit_small_patch16_224" in msg


def test_wildcards_select_with_fnmatch_in_order_without_duplicates() -> None:
    reg = make()
    assert reg.names("resnet*") == ["resnet50", "resnet101"]
    assert reg.select(["vit*", "resnet50", "res*"]) == ["vit_small_patch16_224", "resnet50",
                                                        "resnet101"]
    with pytest.raises(UnknownNameError, match="no widget matches 'dino\\*'"):
        reg.select(["dino*"])


def test_lazy_entry_loads_once_on_first_use() -> None:
    reg: Registry[str] = Registry("thing")
    calls = []

    def loader() -> None:
        calls.append(1)
        reg.register("late", "loaded", origin="file.py")

    reg.register_lazy("late", loader, summary="announced", origin="file.py")
    assert reg.entry("late").summary == "announced"
    assert calls == []
    assert reg.get("late") == "loaded"
    assert reg.get("late") == "loaded"
    assert calls == [1]
    assert reg.entry("late").summary == "announced"


def test_lazy_entry_that_does_not_register_is_reported() -> None:
    reg: Registry[str] = Registry("thing")
    reg.register_lazy("ghost", lambda: None, origin="ghost.py")
    with pytest.raises(ConfigError, match=r"ghost\.py was imported but did not register"):
        reg.get("ghost")


def test_names_sort_naturally() -> None:
    names = ["resnet101", "vit_small_patch16_224", "resnet50", "Resnet18", "vit_small_patch8_224",
             "crf", "resnet152", "b2", "b10", "b02"]
    natural = ["b02", "b2", "b10", "crf", "Resnet18", "resnet50", "resnet101", "resnet152",
               "vit_small_patch8_224", "vit_small_patch16_224"]  # b02 and b2: text breaks ties
    assert natural_sorted(names) == sorted(names, key=natural_key) == natural
    reg: Registry[int] = Registry("widget")
    for i, name in enumerate(names):
        reg.register(name, i)
    assert reg.names() == natural
    assert [e.name for e in reg.entries()] == natural
    assert reg.names("resnet*") == ["resnet50", "resnet101", "resnet152"]
