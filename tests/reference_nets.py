"""A NumPy-only reference of LeNet-5 and ResNet-8: forward and hand-written backward.

Every layer is a (forward, backward) pair on plain arrays, written from the
textbook formulas without any fastdl code, so the model tests compare two
implementations that share nothing.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv_forward(x, w, b, stride, pad):
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    kh, kw = w.shape[2:]
    cols = sliding_window_view(padded, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    out = np.einsum("nchwij,ocij->nohw", cols, w)
    if b is not None:
        out = out + b.reshape(1, -1, 1, 1)
    return out, (x.shape, padded.shape, cols, w, stride, pad)


def conv_backward(g, cache):
    x_shape, padded_shape, cols, w, stride, pad = cache
    grad_w = np.einsum("nohw,nchwij->ocij", g, cols)
    grad_padded = np.zeros(padded_shape)
    out_h, out_w = g.shape[2:]
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            grad_padded[:, :, i:i + stride * out_h:stride, j:j + stride * out_w:stride] += \
                np.einsum("nohw,oc->nchw", g, w[:, :, i, j])
    grad_x = grad_padded[:, :, pad:pad + x_shape[2], pad:pad + x_shape[3]]
    return grad_x, grad_w, g.sum(axis=(0, 2, 3))


def bn_forward(x, gamma, beta, eps=1e-5):
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    x_hat = (x - mean) / np.sqrt(var + eps)
    out = gamma.reshape(1, -1, 1, 1) * x_hat + beta.reshape(1, -1, 1, 1)
    return out, (x_hat, var, eps, gamma, mean.ravel(), var.ravel())


def bn_backward(g, cache):
    x_hat, var, eps, gamma, _, _ = cache
    m = g.shape[0] * g.shape[2] * g.shape[3]
    grad_gamma = np.sum(g * x_hat, axis=(0, 2, 3))
    grad_beta = g.sum(axis=(0, 2, 3))
    g_hat = g * gamma.reshape(1, -1, 1, 1)
    grad_x = (m * g_hat - g_hat.sum(axis=(0, 2, 3), keepdims=True)
              - x_hat * np.sum(g_hat * x_hat, axis=(0, 2, 3), keepdims=True)) / (
        m * np.sqrt(var + eps))
    return grad_x, grad_gamma, grad_beta


def relu_forward(x):
    return np.maximum(x, 0), x > 0


def maxpool2_forward(x):
    n, c, h, w = x.shape
    windows = x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2)
    out = windows.max(axis=(3, 5))
    mask = windows == out[:, :, :, None, :, None]
    return out, (x.shape, mask)


def maxpool2_backward(g, cache):
    shape, mask = cache
    grad = np.zeros(shape)
    n, c, oh, _, ow, _ = mask.shape
    grad[:, :, :oh * 2, :ow * 2] = (mask * g[:, :, :, None, :, None]).reshape(n, c, oh * 2,
                                                                             ow * 2)
    return grad


def cross_entropy(logits, target):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = len(target)
    loss = -log_p[np.arange(n), target].mean()
    grad = np.exp(log_p)
    grad[np.arange(n), target] -= 1
    return loss, grad / n


def lenet5(params, x, target):
    """LeNet-5 as fastdl.models.lenet5(input_size=28); returns logits, loss, grads by name."""
    p = params
    h1, c1 = conv_forward(x, p["0.weight"], p["0.bias"], 1, 2)
    r1, m1 = relu_forward(h1)
    q1, k1 = maxpool2_forward(r1)
    h2, c2 = conv_forward(q1, p["3.weight"], p["3.bias"], 1, 0)
    r2, m2 = relu_forward(h2)
    q2, k2 = maxpool2_forward(r2)
    flat = q2.reshape(len(x), -1)
    activations = [flat]
    masks = []
    z = flat
    for index, name in enumerate(("7", "9", "11")):
        z = z @ p[name + ".weight"].T + p[name + ".bias"]
        if index < 2:
            masks.append(z > 0)
            z = np.maximum(z, 0)
            activations.append(z)
    loss, g = cross_entropy(z, target)
    logits = z
    grads = {}
    for index, name in reversed(list(enumerate(("7", "9", "11")))):
        grads[name + ".weight"] = g.T @ activations[index]
        grads[name + ".bias"] = g.sum(axis=0)
        g = g @ p[name + ".weight"]
        if index > 0:
            g = g * masks[index - 1]
    g = maxpool2_backward(g.reshape(q2.shape), k2) * m2
    g, grads["3.weight"], grads["3.bias"] = conv_backward(g, c2)
    g = maxpool2_backward(g, k1) * m1
    _, grads["0.weight"], grads["0.bias"] = conv_backward(g, c1)
    return logits, loss, grads


def _conv_bn(x, p, conv, bn, stride, pad, caches, stats):
    h, c = conv_forward(x, p[conv + ".weight"], None, stride, pad)
    y, b = bn_forward(h, p[bn + ".weight"], p[bn + ".bias"])
    caches[conv], caches[bn] = c, b
    stats[bn] = (b[4], b[5], h.shape[0] * h.shape[2] * h.shape[3])
    return y


def _conv_bn_backward(g, caches, conv, bn, grads):
    g, grads[bn + ".weight"], grads[bn + ".bias"] = bn_backward(g, caches[bn])
    g, grads[conv + ".weight"], _ = conv_backward(g, caches[conv])
    return g


def _block_forward(x, p, name, stride, caches, stats):
    out = _conv_bn(x, p, name + ".conv1", name + ".bn1", stride, 1, caches, stats)
    out, caches[name + ".relu1"] = relu_forward(out)
    out = _conv_bn(out, p, name + ".conv2", name + ".bn2", 1, 1, caches, stats)
    if name + ".shortcut.0.weight" in p:
        identity = _conv_bn(x, p, name + ".shortcut.0", name + ".shortcut.1", stride, 0,
                            caches, stats)
    else:
        identity = x
    out, caches[name + ".relu2"] = relu_forward(out + identity)
    return out


def _block_backward(g, p, name, caches, grads):
    g = g * caches[name + ".relu2"]
    identity_grad = g
    if name + ".shortcut.0.weight" in p:
        identity_grad = _conv_bn_backward(g, caches, name + ".shortcut.0",
                                          name + ".shortcut.1", grads)
    g = _conv_bn_backward(g, caches, name + ".conv2", name + ".bn2", grads)
    g = g * caches[name + ".relu1"]
    g = _conv_bn_backward(g, caches, name + ".conv1", name + ".bn1", grads)
    return g + identity_grad


def resnet8(params, x, target):
    """ResNet-8 (fastdl.models.resnet8 naming) in training mode.

    Returns logits, loss, parameter gradients, and per-BN (batch mean, biased
    variance, count) for checking the running statistics.
    """
    p, caches, stats, grads = params, {}, {}, {}
    out = _conv_bn(x, p, "stem.0", "stem.1", 1, 1, caches, stats)
    out, caches["stem.relu"] = relu_forward(out)
    blocks = [("layer1.0", 1), ("layer2.0", 2), ("layer3.0", 2)]
    for name, stride in blocks:
        out = _block_forward(out, p, name, stride, caches, stats)
    pooled = out.mean(axis=(2, 3))
    logits = pooled @ p["fc.weight"].T + p["fc.bias"]
    loss, g = cross_entropy(logits, target)
    grads["fc.weight"], grads["fc.bias"] = g.T @ pooled, g.sum(axis=0)
    g = g @ p["fc.weight"]
    g = np.broadcast_to(g[:, :, None, None] / (out.shape[2] * out.shape[3]), out.shape)
    for name, _ in reversed(blocks):
        g = _block_backward(g, p, name, caches, grads)
    g = g * caches["stem.relu"]
    _conv_bn_backward(g, caches, "stem.0", "stem.1", grads)
    return logits, loss, grads, stats
