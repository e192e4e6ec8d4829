"""The embedded world's stimuli: order-independent generation, categories, rendering and captions."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from brainbench.world.shapes import CATEGORIES, CATEGORY_NAMES, DOMAINS, category_domain
from brainbench.world.stimuli import (
    BACKGROUNDS,
    COLOURS,
    POSITIONS,
    SIZES,
    TEXTURES,
    Scene,
    SceneObject,
    generate_scene,
    generate_stimuli,
    render_scene,
    write_captions,
    zero_shot_prompts,
)

IMAGE_PX = 16


@pytest.fixture(scope="module")
def stimuli():
    return generate_stimuli(40, seed=3, image_size=IMAGE_PX)


def test_shapes_and_types(stimuli):
    assert stimuli.images.shape == (40, IMAGE_PX, IMAGE_PX, 3)
    assert stimuli.images.dtype == np.uint8
    assert len(stimuli) == len(stimuli.captions) == len(stimuli.categories) == 40
    assert stimuli.category_names == list(CATEGORY_NAMES)
    assert all(1 <= len(cats) <= 3 for cats in stimuli.categories)
    assert all(c in CATEGORIES for cats in stimuli.categories for c in cats)


def test_image_i_does_not_depend_on_n(stimuli):
    fewer = generate_stimuli(7, seed=3, image_size=IMAGE_PX)
    np.testing.assert_array_equal(fewer.images, stimuli.images[:7])
    assert fewer.captions == stimuli.captions[:7]
    assert fewer.categories == stimuli.categories[:7]
    image, captions, scene = generate_scene(3, 25, IMAGE_PX)
    np.testing.assert_array_equal(image, stimuli.images[25])
    assert captions == stimuli.captions[25]
    assert [o.category for o in scene.objects] == stimuli.categories[25]


def test_seed_changes_the_images(stimuli):
    other = generate_stimuli(5, seed=4, image_size=IMAGE_PX)
    assert not np.array_equal(other.images, stimuli.images[:5])
    assert len(generate_stimuli(0, seed=3, image_size=IMAGE_PX)) == 0


def test_two_workers_give_identical_stimuli():
    n = 260  # chunks are 250 stimuli: two chunks, so the pool is really used
    one = generate_stimuli(n, seed=1, image_size=8, workers=1)
    two = generate_stimuli(n, seed=1, image_size=8, workers=2)
    np.testing.assert_array_equal(one.images, two.images)
    assert one.captions == two.captions
    assert one.categories == two.categories


def test_at_least_50_categories_over_every_domain():
    assert len(CATEGORY_NAMES) >= 50
    assert len(set(CATEGORY_NAMES)) == len(CATEGORY_NAMES)
    domains = {category_domain(name) for name in CATEGORY_NAMES}
    assert domains == set(DOMAINS)
    for domain in ("face", "place", "body", "word"):  # the floc ROIs need something to prefer
        assert sum(category_domain(n) == domain for n in CATEGORY_NAMES) >= 2


@pytest.mark.parametrize("name", CATEGORY_NAMES)
def test_every_category_draws_a_nonempty_mask_at_small_size(name):
    big = IMAGE_PX * 3  # render_scene's supersampled canvas
    mask = Image.new("L", (big, big), 0)
    radius = SIZES["small"] * big
    CATEGORIES[name][1](ImageDraw.Draw(mask), big / 2, big / 2, radius)
    pixels = np.asarray(mask)
    covered = pixels > 127  # glyphs are antialiased, the other drawers binary
    assert covered.sum() >= 4
    assert covered.sum() < big * big / 2  # a silhouette, not a filled canvas


@pytest.mark.parametrize("name", CATEGORY_NAMES)
def test_every_category_shows_in_every_colour_and_texture(name):
    empty = render_scene(Scene("grey", ()), IMAGE_PX, np.random.default_rng(0)).astype(int)
    for colour in COLOURS:
        for texture in TEXTURES:
            scene = Scene("grey", (SceneObject(name, colour, texture, "small", "center"),))
            image = render_scene(scene, IMAGE_PX, np.random.default_rng(0)).astype(int)
            changed = np.abs(image - empty).max(axis=-1) > 8
            assert changed.sum() >= 2, (name, colour, texture)
            assert not changed[0].any() and not changed[-1].any()  # a centred small object stays centred


def test_one_to_five_distinct_captions_naming_every_object(stimuli):
    counts = [len(caps) for caps in stimuli.captions]
    assert min(counts) >= 1 and max(counts) <= 5
    assert len(set(counts)) > 1  # the count varies
    for captions, categories in zip(stimuli.captions, stimuli.categories, strict=True):
        assert len(set(captions)) == len(captions)
        for caption in captions:
            assert categories[0] in caption  # the primary (largest) object
            assert all(c in caption for c in categories)


def test_scene_attributes_are_valid():
    for index in range(30):
        _, _, scene = generate_scene(0, index, 8)
        assert scene.background in BACKGROUNDS
        positions = [o.position for o in scene.objects]
        assert len(set(positions)) == len(positions)
        assert all(p in POSITIONS for p in positions)
        sizes = [SIZES[o.size] for o in scene.objects]
        assert sizes == sorted(sizes, reverse=True)  # largest first


@pytest.mark.parametrize(("category", "article"), [("circle", "a"), ("owl face", "an"), ("letter A", "a")])
def test_zero_shot_prompts(category, article):
    prompts = zero_shot_prompts(category)
    assert prompts == [f"a picture of {article} {category}", f"one object: {article} {category}"]


def test_zero_shot_prompts_are_in_the_caption_style():
    scene = Scene("grey", (SceneObject("octagon", "red", "striped", "large", "left"),))
    captions = write_captions(scene, np.random.default_rng(0), 6)
    assert zero_shot_prompts("octagon")[0] in captions
