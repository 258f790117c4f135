"""Model families of the population. Every model is ``features`` (the trainable block
before the output layer; ``feature_layers``) then ``head``, the last ``nn.Linear``
registered (the output layer bugs and detectors look for)."""
from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}


def norm1d(kind: str, d: int) -> nn.Module:
    return {"none": nn.Identity, "batchnorm": nn.BatchNorm1d, "layernorm": nn.LayerNorm}[kind](d)


def norm2d(kind: str, c: int) -> nn.Module:
    return {"none": nn.Identity(), "batchnorm": nn.BatchNorm2d(c), "layernorm": nn.GroupNorm(1, c)}[kind]


class Residual(nn.Module):
    """x + f(x)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


class Net(nn.Module):
    """``head(features(x))``; a tuple input (token ids, offsets) is passed on whole."""

    def __init__(self, features: nn.Module, head: nn.Linear):
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x):
        return self.head(self.features(x))


def mlp(n_in: int, n_out: int, r, width: int) -> Net:
    act, layers, d = ACTIVATIONS[r.activation], [], n_in
    if r.model == "mlp":
        for _ in range(r.depth):
            layers += [nn.Linear(d, width), norm1d(r.norm, width), act(), nn.Dropout(r.dropout)]
            d = width
    else:  # residual MLP: a stem, then pre-norm blocks x + W2 act(W1 norm(x))
        layers += [nn.Linear(d, width), act()]
        for _ in range(r.depth):
            layers.append(Residual(nn.Sequential(norm1d(r.norm, width), nn.Linear(width, width), act(),
                                                 nn.Dropout(r.dropout), nn.Linear(width, width))))
        layers += [norm1d(r.norm, width), act()]
        d = width
    return Net(nn.Sequential(*layers), nn.Linear(d, n_out))


def cnn(n_out: int, r, channels: int) -> Net:
    """On (B, 1, 8, 8): conv blocks, 2x2 max-pool, flatten."""
    act, c = ACTIVATIONS[r.activation], channels
    layers = [nn.Conv2d(1, c, 3, padding=1), norm2d(r.norm, c), act()]
    if r.model == "cnn":
        for _ in range(r.depth - 1):
            layers += [nn.Conv2d(c, 2 * c, 3, padding=1), norm2d(r.norm, 2 * c), act()]
            c *= 2
    else:
        for _ in range(r.depth):
            layers.append(Residual(nn.Sequential(nn.Conv2d(c, c, 3, padding=1), norm2d(r.norm, c), act(),
                                                 nn.Conv2d(c, c, 3, padding=1))))
            layers.append(act())
    layers += [nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(r.dropout)]
    return Net(nn.Sequential(*layers), nn.Linear(c * 16, n_out))


class Recurrent(nn.Module):
    """A GRU/LSTM over (B, T, F) rows or token ids; time-first nets receive the
    ``to_sequence`` seam's (T, B, F). ``per_position``: an output per step (a language
    model reads window[:, :-1]); else the last step's hidden state."""

    def __init__(self, r, n_in: int, n_out: int, hidden: int, to_sequence, vocab: int = 0):
        super().__init__()
        cls = nn.GRU if r.model == "gru" else nn.LSTM
        self.embed = nn.Embedding(vocab, n_in) if vocab else None
        self.rnn = cls(n_in, hidden, num_layers=r.depth, batch_first=not r.time_first,
                       dropout=r.dropout if r.depth > 1 else 0.0)
        self.head = nn.Linear(hidden, n_out)
        self.to_sequence, self.time_first, self.per_position = to_sequence, r.time_first, bool(vocab)

    def forward(self, x):
        if self.embed is not None:
            x = self.embed(x[:, :-1])  # (B, T, E): the window's last token is only ever a target
        seq = self.to_sequence(x) if self.time_first else x  # (T, B, F) or (B, T, F)
        out, _ = self.rnn(seq)
        if self.time_first:
            out = out.transpose(0, 1)  # (B, T, H)
        return self.head(out if self.per_position else out[:, -1])  # (B, T, n_out) or (B, n_out)


class AttentionBlock(nn.Module):
    """One pre-LN transformer block: x + attn(LN(x)), x + MLP(LN(x)); ``mask_fn(T)`` gives
    the causal mask of a language model (None: every position sees every other)."""

    def __init__(self, d: int, act: str, dropout: float, mask_fn=None):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, num_heads=2, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), ACTIVATIONS[act](), nn.Linear(2 * d, d), nn.Dropout(dropout))
        self.mask_fn = mask_fn

    def forward(self, h):  # (B, T, d)
        a = self.norm1(h)
        mask = self.mask_fn(h.shape[1]) if self.mask_fn is not None else None
        h = h + self.attn(a, a, a, attn_mask=mask, need_weights=False)[0]
        return h + self.mlp(self.norm2(h))


class Attention(nn.Module):
    """Rows (B, T, F) or token windows -> input projection/embedding + learned positions,
    ``depth`` attention blocks, final LayerNorm; mean-pooled for classification, per
    position for a language model."""

    def __init__(self, r, n_in: int, n_out: int, d: int, t: int, mask_fn=None, vocab: int = 0):
        super().__init__()
        self.inp = nn.Embedding(vocab, d) if vocab else nn.Linear(n_in, d)
        self.pos = nn.Parameter(torch.zeros(t, d))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(AttentionBlock(d, r.activation, r.dropout, mask_fn) for _ in range(r.depth))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, n_out)
        self.lm = bool(vocab)

    def forward(self, x):
        if self.lm:
            x = x[:, :-1]  # (B, T) ids
        h = self.inp(x) + self.pos[: x.shape[1]]  # (B, T, d)
        for block in self.blocks:
            h = block(h)
        h = self.norm(h)
        return self.head(h if self.lm else h.mean(1))


class Bag(nn.Module):
    """``nn.EmbeddingBag`` (mean or sum of each document's embeddings) on (text, offsets),
    or on padded rows (B, T), then an optional hidden layer and the output layer."""

    def __init__(self, r, vocab: int, n_out: int, d: int):
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab, d, mode="mean", padding_idx=0)
        self.hidden = nn.Sequential(nn.Linear(d, d), ACTIVATIONS[r.activation](), nn.Dropout(r.dropout)) \
            if r.depth > 1 else nn.Identity()
        self.head = nn.Linear(d, n_out)

    def forward(self, text, offsets=None):
        if isinstance(text, (tuple, list)):
            text, offsets = text
        return self.head(self.hidden(self.embedding(text, offsets)))


class Autoencoder(nn.Module):
    """MLP encoder to a code of width // 4, decoder back to the pixels: linear outputs
    under an L2 loss, a sigmoid under pixel-wise BCE. The output bias is set by
    :func:`init_mean_image` (the recipe's "init well": start from the mean image)."""

    def __init__(self, r, n: int, width: int):
        super().__init__()
        self.sigmoid = r.loss == "bce_pixels"
        act = ACTIVATIONS[r.activation]
        code = max(8, width // 4)
        layers = [nn.Linear(n, width), norm1d(r.norm, width), act(), nn.Linear(width, code), act()]
        if r.depth > 1:
            layers += [nn.Linear(code, width), norm1d(r.norm, width), act()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width if r.depth > 1 else code, n)

    def forward(self, x):
        out = self.head(self.features(x))
        return torch.sigmoid(out) if self.sigmoid else out


def init_mean_image(net: Autoencoder, mean: torch.Tensor) -> None:
    """Output bias = the mean training image (its logit under a sigmoid)."""
    with torch.no_grad():
        m = mean.clamp(0.01, 0.99)
        net.head.bias.copy_(torch.log(m / (1 - m)) if net.sigmoid else mean)


def initialize(model: nn.Module, scheme: str, activation: str) -> nn.Module:
    """Library default, or kaiming / xavier / orthogonal on every weight matrix and
    conv kernel (biases zero); recurrent weights orthogonal under "orthogonal"."""
    if scheme == "default":
        return model
    gain_act = {"relu": "relu", "leaky_relu": "leaky_relu", "tanh": "tanh", "gelu": "relu"}[activation]
    for m in model.modules():
        for name, w in list(m.named_parameters(recurse=False)):
            if isinstance(m, (nn.Embedding, nn.EmbeddingBag, nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d,
                              nn.BatchNorm2d)) or w.dim() < 2:
                if name.startswith("bias") and not isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d,
                                                                  nn.BatchNorm2d)):
                    nn.init.zeros_(w)
                continue
            if scheme == "kaiming":
                nn.init.kaiming_uniform_(w, nonlinearity=gain_act)
            elif scheme == "xavier":
                nn.init.xavier_uniform_(w, gain=nn.init.calculate_gain(gain_act))
            else:
                nn.init.orthogonal_(w)
    return model
