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


@pytest.mark.parametrize("train, message", [
    ({"epoch": 3}, "train.epoch: unknown key"),
    ({"mixup_alpha": "abc"}, 'train.mixup_alpha: expected a number, got "abc"'),
    ({"precision": "fp8"}, "train.precision: expected one of fp32, bf16, fp16"),
    ({"early_stopping_metric": "bogus"}, "train.early_stopping_metric: expected one of balanced_accuracy"),
    ({"optimizer": "adamm"}, "train.optimizer: expected one of sgd, adam, adamw"),
    ({"schedule": "cosin"}, "train.schedule: expected one of cosine"),
    ({"nonfinite": "ignore"}, "train.nonfinite: expected one of stop, skip"),
    ({"device": "tpu"}, "train.device: expected one of auto, cpu, cuda"),
    ({"model": "resnet9000"}, "train.model: unknown model 'resnet9000'"),
    ({"model": "simple_cnn", "model_options": {"widht": 8}}, "train.model_options.widht: simple_cnn has no option"),
    ({"lr": float("nan")}, "train.lr: expected a finite number"),
    ({"epochs": 0}, "train.epochs: expected a whole number in [1, 100000]"),
    ({"batch_size": 2 ** 70}, "train.batch_size: expected a whole number in [1, 65536]"),
    ({"threads": 0}, "train.threads: expected a whole number in [1, 1024]"),
    ({"swa_start": 5, "epochs": 3}, "train.swa_start: epoch 5 is not below train.epochs (3)"),
    ({"stream": [{"op": "normalize"}, {"op": "hflip"}]}, "train.stream[0].op: normalize: it must be the last op"),
    ({"stream": [{"op": "rotate"}]}, "train.stream[0].degrees: missing"),
    ({"early_stopping_patience": 0}, "train.early_stopping_patience: expected a whole number in [1, 100000]"),
])
def test_every_train_key_is_checked_when_the_recipe_is_read(train, message):
    with pytest.raises(RecipeError) as err:
        parse_recipe(_with(train=train), "r.yaml")
    assert str(err.value).startswith("r.yaml: ") and message in str(err.value)


def test_build_and_preview_refuse_a_bad_train_section_before_any_work(tmp_path, capsys):
    import yaml

    from augforge.cli import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(_with(train={"epoch": 3}, output={"dir": "out"})))
    for argv in (["build", str(recipe)], ["preview", str(recipe), "--out", str(tmp_path / "p.png")]):
        assert main(argv) == 1
        assert "r.yaml: train.epoch: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "p.png").exists()


def test_online_mode():
    recipe = parse_recipe(_with(augment={"mode": "online", "image": [{"op": "hflip"}]},
                                train={"stream": [{"op": "normalize"}]}), "r.yaml")
    assert [op.name for op in recipe.train_ops] == ["hflip", "normalize"]
    offline = parse_recipe(_with(train={"stream": [{"op": "normalize"}]}), "r.yaml")
    assert [op.name for op in offline.train_ops] == ["normalize"]  # offline: the ops were written into shards
    other_ops = parse_recipe(_with(augment={"mode": "online", "image": [{"op": "vflip"}]}), "r.yaml")
    assert other_ops.fingerprint_parts() == recipe.fingerprint_parts()  # online ops do not change the build
    for augment, message in [({"mode": "online", "copies": 2, "image": [{"op": "hflip"}]},
                              "augment.copies: online mode draws fresh augmentations"),
                             ({"mode": "later"}, "augment.mode: expected one of offline, online"),
                             ({"mode": "online", "text": [{"op": "eda"}]}, "augment.mode: online augmentation")]:
        with pytest.raises(RecipeError, match=message):
            parse_recipe(_with(augment=augment), "r.yaml")


def test_paths_are_printed_and_fingerprinted_resolved(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "t.csv").write_text("text,label\nhello there,a\ngood bye,b\n")
    (tmp_path / "recipes" / "deep").mkdir(parents=True)
    near = parse_recipe({"source": {"path": "../data/t.csv", "text_col": "text"}, "output": {"dir": "../out"}},
                        "a.yaml", tmp_path / "recipes")
    far = parse_recipe({"source": {"path": "../../data/t.csv", "text_col": "text"}},
                       "b.yaml", tmp_path / "recipes" / "deep")
    assert ".." not in near.source.path and ".." not in near.output.dir
    assert near.output.dir == str(tmp_path / "out")
    assert near.fingerprint_parts() == far.fingerprint_parts()


@pytest.mark.parametrize("options", [float("nan"), [1, 2], {1.5: 2}, "alpha"])
def test_model_options_must_be_a_mapping_of_names(options):
    with pytest.raises(RecipeError, match="r.yaml: train.model_options: expected a mapping of option names"):
        parse_recipe(_with(train={"model_options": options}), "r.yaml")
