"""The scene's optional ``title`` and ``[descriptions]`` of its classes: read, defaulted, and refused in one line
naming the key and the fix."""
from __future__ import annotations

import pytest

from builders import SUBSET, write_scene
from pipeline.core.errors import ConfigError
from pipeline.run.config import load_scene


def scene_file(tmp_path, extra: str = "", **keys):
    path = write_scene(tmp_path / "scene.toml", SUBSET, SUBSET, name="aberystwyth", **keys)
    path.write_text(path.read_text() + extra)
    return path


def test_without_title_or_descriptions_the_title_is_the_name_with_a_capital(tmp_path):
    scene = load_scene(scene_file(tmp_path))
    assert scene.title is None and scene.display_title == "Aberystwyth" and scene.descriptions == {}
    assert scene.class_label("crop") == "crop"


def test_title_and_descriptions_are_read(tmp_path):
    scene = load_scene(scene_file(tmp_path, '[descriptions]\ncrop = " improved pasture "\n', title="Aberystwyth 2021"))
    assert scene.display_title == "Aberystwyth 2021"
    assert scene.descriptions == {"crop": "improved pasture"}
    assert scene.class_label("crop") == "crop (improved pasture)" and scene.class_label("water") == "water"


@pytest.mark.parametrize("extra, keys, fragments", [
    ('[descriptions]\ncorp = "pasture"\n', {}, ("[descriptions] names 'corp', which is no class of [classes] (did you "
                                                "mean 'crop'?)", "the classes are urban, crop, vegetation, water")),
    ('[descriptions]\ncrop = 3\n', {}, ("[descriptions] crop = 3 must be one line of text",)),
    ('[description]\ncrop = "pasture"\n', {}, ("unknown key 'description' (did you mean 'descriptions'?)",)),
    ('', {"title": ""}, ("title = '' must be one line of text", 'title = "Aberystwyth, May 2021"')),
    ('', {"titel": "x"}, ("unknown key 'titel' (did you mean 'title'?)",)),
])
def test_a_bad_title_or_description_is_one_line_naming_it(tmp_path, extra, keys, fragments):
    with pytest.raises(ConfigError) as error:
        load_scene(scene_file(tmp_path, extra, **keys))
    message = str(error.value)
    assert "\n" not in message and all(fragment in message for fragment in fragments), message
