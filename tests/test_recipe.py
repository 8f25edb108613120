"""The recipe: YAML loaded safely, validated before any work, every error naming its place in the file."""

import pytest

from augforge.recipe import RecipeError, load_recipe, parse_recipe

BASE = {"source": {"path": "digits"}, "augment": {"copies": 2, "image": [{"op": "hflip"}]}}


def _with(**sections):
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    data.update(sections)
    return data


def test_the_example_recipe_loads():
    recipe = load_recipe("examples/digits.yaml")
    assert recipe.source.path == "digits" and recipe.source.imbalance == "longtail"
    assert recipe.strategy == "over" and recipe.augment.copies == 4 and recipe.output.format == "png"
    assert [op.name for op in recipe.augment.image] == ["pad", "random_crop", "rotate", "gaussian_blur"]
    rotate = recipe.augment.image[2]
    assert rotate.params["degrees"] == (-12.0, 12.0) and rotate.p == 0.8
    assert recipe.output.dir.endswith("build/digits-aug")


@pytest.mark.parametrize("augment, message", [
    ({"copies": 1, "image": [{"op": "hflip"}, {"op": "blur"}, {"op": "rotate", "degrees": "abc"}]},
     'augment.image[2].degrees: expected a number or [min, max], got "abc"'),
    ({"copies": 1, "image": [{"op": "rotate", "degrees": [10, 5]}]}, "augment.image[0].degrees: min 10 is above max 5"),
    ({"copies": 1, "image": [{"op": "swirl"}]}, "augment.image[0].op: unknown op 'swirl'"),
    ({"copies": 1, "image": [{"op": "rotate", "degrees": 5, "angle": 3}]},
     "augment.image[0].angle: rotate has no parameter 'angle'"),
    ({"copies": 1, "image": [{"op": "random_crop"}]}, "augment.image[0].size: missing"),
    ({"copies": 1, "image": [{"op": "hflip", "p": 1.5}]}, "augment.image[0].p: expected a number in [0.0, 1.0]"),
    ({"copies": 1, "image": [{"op": "resize", "size": [32]}]}, "augment.image[0].size: expected a size"),
    ({"copies": -1, "image": [{"op": "hflip"}]}, "augment.copies: expected a whole number in [0, 1000]"),
    ({"copies": {"default": 2, "9": "x"}, "image": [{"op": "hflip"}]}, "augment.copies.9: expected a whole number"),
    ({"copies": 3}, "augment.image: copies are asked for but no ops"),
    ({"copies": 1, "device": "tpu", "image": [{"op": "hflip"}]}, "augment.device: expected one of auto, cpu, gpu"),
    ({"copies": 1, "colour": "rgb", "image": [{"op": "hflip"}]}, "augment.colour: unknown key"),
])
def test_bad_augment_sections_name_their_place(augment, message):
    with pytest.raises(RecipeError) as err:
        parse_recipe(_with(augment=augment), "r.yaml")
    assert str(err.value).startswith("r.yaml: ") and message in str(err.value)


@pytest.mark.parametrize("section, value, message", [
    ("source", {"label_col": "y"}, "source.path: missing"),
    ("source", {"path": "digits", "test_split": 2}, "source.test_split: expected a number in [0.0, 0.9]"),
    ("source", {"path": "digits", "imbalance": "zipf"}, "source.imbalance: expected one of longtail"),
    ("balance", {"strategy": "smoot"}, "balance.strategy: unknown sampler 'smoot'"),
    ("output", {"format": "gif"}, "output.format: expected one of png, jpeg, raw"),
    ("output", {"quality": 0}, "output.quality: expected a whole number in [1, 100]"),
    ("output", {"shard_rows": 10, "shard_mb": 1}, "output: give shard_rows or shard_mb, not both"),
    ("seed", "seven", "seed: expected a whole number"),
    ("clean", {"drop_duplicates": "yes"}, "clean.drop_duplicates: expected true or false"),
])
def test_bad_sections_name_their_place(section, value, message):
    with pytest.raises(RecipeError, match="r.yaml: ") as err:
        parse_recipe(_with(**{section: value}), "r.yaml")
    assert message in str(err.value)


def test_unknown_top_level_key_and_empty_recipe():
    with pytest.raises(RecipeError, match="augmentation: unknown key"):
        parse_recipe({"source": {"path": "digits"}, "augmentation": {}}, "r.yaml")
    with pytest.raises(RecipeError, match="empty"):
        parse_recipe(None, "r.yaml")


def test_yaml_is_loaded_safely_and_syntax_errors_name_the_line(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("source: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(evil)
    broken = tmp_path / "broken.yaml"
    broken.write_text("source:\n  path: digits\n  test_split: [0.2\n")
    with pytest.raises(RecipeError, match=r"broken.yaml: line \d+, column \d+"):
        load_recipe(broken)
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "missing.yaml")


def test_paths_are_relative_to_the_recipe(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    path = tmp_path / "r.yaml"
    path.write_text("source: {path: photos}\noutput: {dir: out}\n")
    recipe = load_recipe(path)
    assert recipe.source.path == str(folder) and recipe.output.dir == str(tmp_path / "out")


def test_per_class_copies_and_symmetric_ranges():
    recipe = parse_recipe(_with(augment={"copies": {"default": 2, "9": 6},
                                         "image": [{"op": "rotate", "degrees": 10}, {"op": "color", "hue": 15}]}))
    assert recipe.augment.copies_for("9") == 6 and recipe.augment.copies_for("0") == 2
    assert recipe.augment.image[0].params["degrees"] == (-10.0, 10.0)
    assert recipe.augment.image[1].params["hue"] == (15.0, 15.0)  # a fixed shift: only degrees are symmetric
