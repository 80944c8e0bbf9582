"""Image transforms: geometry against NumPy and torch, colour identities, erasing, mixing."""
import math

import numpy as np
import pytest

import fastdl
from fastdl.data import transforms as T
from fastdl.data.transforms._image import inverse_affine, warp_affine


@pytest.fixture
def image(rng):
    return rng.random((3, 11, 15)).astype(np.float32)


def _torch_warp(images, matrices, mode, fill):
    """torchvision's tensor warp: affine_grid over centred pixels, grid_sample, fill mask."""
    torch = pytest.importorskip("torch")
    n, c, h, w = images.shape
    base = torch.empty(n, h, w, 3)
    base[..., 0] = torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, steps=w)
    base[..., 1] = torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, steps=h).unsqueeze(-1)
    base[..., 2] = 1
    theta = torch.tensor(matrices, dtype=torch.float32).transpose(1, 2)
    grid = base.view(n, h * w, 3).bmm(theta / torch.tensor([0.5 * w, 0.5 * h]))
    x = torch.cat([torch.from_numpy(images), torch.ones(n, 1, h, w)], 1)
    out = torch.nn.functional.grid_sample(x, grid.view(n, h, w, 2), mode=mode,
                                          padding_mode="zeros", align_corners=False)
    mask, out = out[:, -1:].expand(n, c, h, w), out[:, :-1]
    fill = torch.tensor(fill, dtype=torch.float32).view(1, -1, 1, 1).expand_as(out)
    if mode == "nearest":
        return torch.where(mask < 0.5, fill, out).numpy()
    return (out * mask + (1 - mask) * fill).numpy()


# ------------------------------------------------------------------- geometry

@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("size", [9, 8])
def test_rotation_by_90_degrees_is_rot90(rng, interpolation, size):
    img = rng.random((2, size, size)).astype(np.float32)
    turned = T.RandomRotation((90, 90), interpolation=interpolation)(img)
    np.testing.assert_allclose(turned, np.rot90(img, 1, axes=(1, 2)), atol=1e-6)
    clockwise = T.RandomAffine((90, 90), interpolation=interpolation)(img)
    np.testing.assert_allclose(clockwise, np.rot90(img, -1, axes=(1, 2)), atol=1e-6)


def test_rotation_expand_holds_the_whole_image(rng):
    img = rng.random((1, 6, 10)).astype(np.float32)
    turned = T.RandomRotation((90, 90), expand=True)(img)
    np.testing.assert_array_equal(turned, np.rot90(img, 1, axes=(1, 2)))


def test_integer_translation_shifts_and_fills(image):
    matrices = inverse_affine(np.zeros(1), np.array([[2.0, -1.0]]), np.ones(1),
                              np.zeros((1, 2)), (0.0, 0.0))
    out = warp_affine(image[None], matrices, image.shape[1:], "nearest", -1.0)[0]
    np.testing.assert_array_equal(out[:, :-1, 2:], image[:, 1:, :-2])
    assert np.all(out[:, :, :2] == -1) and np.all(out[:, -1, :] == -1)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_affine_matches_torch_grid_sample(rng, interpolation):
    images = rng.random((3, 3, 11, 15)).astype(np.float32)
    affine = T.RandomAffine(40, translate=(0.2, 0.1), scale=(0.7, 1.3), shear=(-10, 10, -5, 5),
                            interpolation=interpolation, fill=[0.1, 0.2, 0.3])
    params = affine.get_params(3, 11, 15, np.random.default_rng(5))
    expected = _torch_warp(images, inverse_affine(*params, (0.0, 0.0)), interpolation,
                           [0.1, 0.2, 0.3])
    np.testing.assert_allclose(affine(images, np.random.default_rng(5)), expected, atol=1e-5)


@pytest.mark.parametrize("size", [(5, 7), (20, 30), (26, 5)])
@pytest.mark.parametrize("antialias", [True, False])
def test_resize_matches_torch_interpolate(rng, size, antialias):
    torch = pytest.importorskip("torch")
    x = rng.random((2, 3, 13, 17)).astype(np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="bilinear",
                                               align_corners=False, antialias=antialias)
    np.testing.assert_allclose(T.Resize(size, antialias=antialias)(x), expected.numpy(),
                               atol=2e-6)
    nearest = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="nearest")
    np.testing.assert_array_equal(T.Resize(size, interpolation="nearest")(x), nearest.numpy())


def test_resize_int_matches_the_shorter_edge(image):
    assert T.Resize(22)(image).shape == (3, 22, 30)
    assert T.Resize(22, max_size=25)(image).shape == (3, 18, 25)
    np.testing.assert_allclose(T.Resize((11, 15))(image), image, atol=1e-6)


def test_random_resized_crop_size_and_boxes(rng):
    images = rng.random((64, 2, 20, 30)).astype(np.float32)
    crop = T.RandomResizedCrop((8, 12), scale=(0.2, 0.6))
    assert crop(images, np.random.default_rng(0)).shape == (64, 2, 8, 12)
    assert crop(images[0]).shape == (2, 8, 12)
    top, left, h, w = crop.get_params(500, 20, 30, np.random.default_rng(1))
    assert np.all(top >= 0) and np.all(top + h <= 20) and np.all(left >= 0)
    assert np.all(left + w <= 30)
    fraction = h * w / 600
    assert fraction.min() > 0.15 and fraction.max() < 0.7    # rounding of the sides
    whole = T.RandomResizedCrop((20, 30), scale=(1, 1), ratio=(1.5, 1.5))
    np.testing.assert_allclose(whole(images), images, atol=1e-6)


def test_crops_and_flips(image):
    centre = T.CenterCrop((5, 8))(image)
    np.testing.assert_array_equal(centre, image[:, 3:8, 4:12])
    assert T.CenterCrop(17)(image).shape == (3, 17, 17)
    crop = T.RandomCrop((11, 15), padding=(2, 1), padding_mode="reflect")(image)
    padded = np.pad(image, ((0, 0), (1, 1), (2, 2)), mode="reflect")
    assert any(np.array_equal(crop, padded[:, r:r + 11, c:c + 15])
               for r in range(3) for c in range(5))
    assert T.RandomCrop(20, pad_if_needed=True)(image).shape == (3, 20, 20)
    with pytest.raises(ValueError, match="larger"):
        T.RandomCrop(20)(image)
    np.testing.assert_array_equal(T.RandomVerticalFlip(1.0)(image), image[:, ::-1])
    np.testing.assert_array_equal(T.RandomHorizontalFlip(0.0)(image), image)


def test_a_batch_gets_parameters_per_image(rng):
    batch = np.repeat(rng.random((1, 1, 12, 12)).astype(np.float32), 16, axis=0)
    crops = T.RandomCrop(6)(batch, np.random.default_rng(0))
    assert len({crop.tobytes() for crop in crops}) > 4


# ----------------------------------------------------------- tensors and colour

def test_to_tensor_normalize_and_kinds(rng):
    pixels = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    tensor = T.ToTensor()(pixels)
    assert isinstance(tensor, fastdl.Tensor) and tensor.shape == (3, 6, 5)
    np.testing.assert_allclose(tensor.numpy(), pixels.transpose(2, 0, 1) / 255.0, rtol=1e-6)
    normalized = T.Normalize([0.5] * 3, [0.25] * 3)(tensor)
    assert isinstance(normalized, fastdl.Tensor)
    np.testing.assert_allclose(normalized.numpy(), (tensor.numpy() - 0.5) / 0.25, rtol=1e-6)
    flipped = T.RandomHorizontalFlip(1.0)(tensor)
    assert isinstance(flipped, fastdl.Tensor)
    pil = pytest.importorskip("PIL.Image")
    picture = pil.fromarray(pixels)
    np.testing.assert_allclose(T.ToTensor()(picture).numpy(), tensor.numpy())
    cropped = T.RandomCrop(4)(picture)
    assert isinstance(cropped, pil.Image) and cropped.size == (4, 4)
    assert T.Lambda(lambda x: x * 2)(3) == 6


def test_color_jitter_identities(rng):
    images = rng.random((4, 3, 6, 7)).astype(np.float32)
    assert T.ColorJitter()(images) is images
    same = T.ColorJitter(brightness=(1, 1), contrast=0, saturation=(1, 1), hue=0)(images)
    np.testing.assert_array_equal(same, images)
    from fastdl.data.transforms.color import hsv_to_rgb, rgb_to_hsv
    np.testing.assert_allclose(hsv_to_rgb(rgb_to_hsv(images)), images, atol=1e-6)
    grey = T.ColorJitter(saturation=(0, 0))(images)
    np.testing.assert_allclose(grey[:, 0], grey[:, 1], atol=1e-6)
    darker = T.ColorJitter(brightness=(0.5, 0.5))(images)
    np.testing.assert_allclose(darker, images * 0.5, rtol=1e-6)
    jittered = T.ColorJitter(0.4, 0.4, 0.4, 0.1)(images)
    assert jittered.shape == images.shape and 0 <= jittered.min() and jittered.max() <= 1
    one_channel = images[:, :1]
    np.testing.assert_array_equal(T.ColorJitter(saturation=0.5, hue=0.2)(one_channel),
                                  one_channel)
    with pytest.raises(ValueError, match="hue"):
        T.ColorJitter(hue=0.7)


def test_random_erasing_area_is_within_scale(rng):
    images = rng.random((200, 3, 16, 20)).astype(np.float32) + 1.0
    erased = T.RandomErasing(p=1.0, scale=(0.05, 0.2), value=0)(images)
    fraction = (erased[:, 0] == 0).mean(axis=(1, 2))
    assert np.all(fraction > 0) and fraction.min() > 0.03 and fraction.max() < 0.25
    assert np.array_equal(erased == 0, np.broadcast_to((erased[:, :1] == 0), erased.shape))
    np.testing.assert_array_equal(T.RandomErasing(p=0.0)(images), images)
    noisy = T.RandomErasing(p=1.0, value="random")(images)
    assert np.any(noisy < 0)
    with pytest.raises(ValueError, match="value"):
        T.RandomErasing(value="zeros")


# -------------------------------------------------------------------- mixing

def test_mixup_blends_pairs_and_targets(rng):
    x = rng.random((8, 3, 4, 4)).astype(np.float32)
    y = np.arange(8)
    mixed, y_a, y_b, lam = T.mixup(x, y, alpha=0.4, generator=0)
    np.testing.assert_array_equal(y_a, y)
    np.testing.assert_allclose(mixed, lam * x + (1 - lam) * x[y_b], rtol=1e-5)
    mixed_t, soft = T.mixup(fastdl.Tensor(x), fastdl.Tensor(y), alpha=0.4, num_classes=8,
                            generator=0)
    assert isinstance(mixed_t, fastdl.Tensor) and soft.shape == (8, 8)
    np.testing.assert_allclose(soft.numpy().sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(soft.numpy()[np.arange(8), y], np.where(y == y_b, 1, lam),
                               rtol=1e-6)


def test_cutmix_pastes_a_box_and_reports_the_kept_area(rng):
    x = rng.random((6, 2, 10, 12)).astype(np.float32)
    mixed, y_a, y_b, lam = T.cutmix(x, np.arange(6), alpha=1.0, generator=3)
    from_other = np.all(mixed == x[y_b], axis=1) & ~np.all(mixed == x, axis=1)
    moved = y_b != np.arange(6)
    assert math.isclose(1 - from_other[moved].mean(axis=(1, 2))[0], lam)
    assert np.all(np.all(mixed == x, axis=1) | np.all(mixed == x[y_b], axis=1))


def test_transforms_follow_manual_seed(image):
    pipeline = T.Compose([T.RandomResizedCrop(8), T.RandomHorizontalFlip(),
                          T.ColorJitter(0.3, 0.3, 0.3, 0.05), T.RandomRotation(20),
                          T.RandomErasing()])
    fastdl.manual_seed(4)
    first = [pipeline(image) for _ in range(3)]
    fastdl.manual_seed(4)
    np.testing.assert_array_equal(np.stack(first), np.stack([pipeline(image) for _ in range(3)]))
    assert not np.array_equal(first[0], first[1])
