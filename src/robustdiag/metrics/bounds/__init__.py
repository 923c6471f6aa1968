"""Closed-form upper bounds on λ_max(F(x)) from layer operator norms (``metric=spectral_bound``, DESIGN §4.4).

λ_max(F) ≤ ‖diag p − ppᵀ‖₂ ‖J‖₂² ≤ ½ ‖J‖₂², because uᵀ(diag p − ppᵀ)u = Var_{y∼p}(u_y) ≤ (max u − min u)²/4
≤ ½ for a unit vector u. ‖J(x)‖₂ is bounded by a Lipschitz constant L composed over the network:

* **chains** multiply. Consecutive linear/affine layers (conv, eval-mode BatchNorm, linear, average pooling,
  flatten, the model's input normalisation, patch and positional embeddings, dropout in eval) are merged
  into one operator whose spectral norm is found by a Krylov power method (Lanczos on AᵀA, which converges
  far faster than plain power iteration on the flat top spectra of convolutions) applied to the actual
  composite at the model's input size (stride and padding included; the adjoint comes from autograd, i.e.
  the exact conv_transpose2d). BatchNorm is thereby folded into its conv and the normalisation (1/min std
  on its own) into the stem — each fold is at most the product of the separate norms. A lone
  ``nn.Linear`` uses the exact ``matrix_norm(W, 2)``. The iterative estimate approaches the norm from
  below; it runs until the Ritz residual is ≤ ``power_tol`` (iterations are in the per-layer rows).
* **activations**: ReLU/ReLU6/Tanh/Softplus 1, LeakyReLU/ELU/PReLU max(1, slope), GELU 1.13, SiLU/Swish
  1.1, Mish 1.09, Hardswish 1.5, Sigmoid ¼, Hardsigmoid ⅙ (max |f'|).
* **max pooling**: √c with c the largest number of windows that share one input (1 for non-overlapping
  windows such as VGG's 2×2/2; 2 for ResNet's 3×3/2 stem pool — "max-pool is 1-Lipschitz" holds only
  without overlap).
* **residual blocks** y = act(branch(x) + shortcut(x)): L_act (L_branch + L_shortcut), with L_shortcut = 1
  for the identity, i.e. (1 + ‖branch‖) (timm BasicBlock/Bottleneck without squeeze-excitation).
* **DenseNet blocks** x_l = h_l([x_0, …, x_{l−1}]) with output [x_0, …, x_L]:
  ‖Δ[x_0..x_l]‖² ≤ (1 + L_l²) ‖Δ[x_0..x_{l−1}]‖², so the block contributes Π_l √(1 + L_l²).
* **ViT** blocks x + ls(attn(LN(x))), x + ls(mlp(LN(x))) give (1 + L_ls L_attn L_LN)(1 + L_ls L_mlp L_LN).
  LayerNorm and dot-product attention are **not** globally Lipschitz, so these two factors are local:
  LN by max|γ| / σ_min with σ_min = √(var + ε) the smallest over the tokens of the evaluated inputs (or
  the stated ``layernorm_sigma_floor``); attention by
  ‖W_O‖ (max_h ‖A_h‖ ‖W_V‖ + √Σ_h c_h²), c_h = s_h ‖V_h‖ (‖W_Q^h‖ ‖K_h‖ + ‖Q_h‖ ‖W_K^h‖) / √d_h, where
  s_h = min(½, max A_h) bounds the softmax Jacobian and A_h, Q_h, K_h, V_h are measured at the evaluated
  inputs. The value term is the attention-weighted value path, the second the softmax path. For a ViT
  the result bounds ‖J(x)‖ and λ(x) at the evaluated inputs only (``local = 1``).

Everything is accumulated in log space (a deep net's product overflows float64). Every walk is checked
by re-running it as a forward pass and comparing with the model's logits, so a block whose forward the
walk does not reproduce fails loudly instead of giving a bound that does not bound.

Unsupported modules raise an error that lists the supported families; there is deliberately no fallback
"chain over every conv/linear layer", which is not an upper bound once the forward has skips or gating.

Ranking the bounds imply (randomly initialised timm models at 32 px, 10 classes; log10 bound on λ_max,
from ``python benchmarks/bench_fisher.py --bounds-only``, also recorded in robustdiag/conf/metric/spectral_bound.yaml):
densenet121 57.6 > vit_tiny (patch 4, local) 33.3 > resnet18 11.6 > vgg11_bn 6.3. Only "DenseNet is the
least robust" agrees with the paper's claimed robustness order DenseNet121 < VGG16 < ResNet18 ≤ ViT-B-16.
"""

import importlib
import pkgutil

from robustdiag.metrics.bounds import families, layers
from robustdiag.metrics.bounds.layers import ACTIVATION_LIPSCHITZ, GELU_LIP, MISH_LIP, SILU_LIP
from robustdiag.metrics.bounds.metric import BoundResult, SpectralBound, empirical_lambda, spectral_bound
from robustdiag.metrics.bounds.ops import (
    Chain,
    ConstOp,
    DenseBlockOp,
    LinearOp,
    Op,
    PowerSettings,
    ResidualOp,
    UnsupportedArchitecture,
    max_pool_overlap,
    operator_norm,
    supported,
)
from robustdiag.metrics.bounds.registry import module_ops, network_ops, register

for _module in pkgutil.iter_modules(families.__path__):  # every family registers its converters on import
    importlib.import_module(f"{families.__name__}.{_module.name}")

__all__ = [
    "ACTIVATION_LIPSCHITZ",
    "GELU_LIP",
    "MISH_LIP",
    "SILU_LIP",
    "BoundResult",
    "Chain",
    "ConstOp",
    "DenseBlockOp",
    "LinearOp",
    "Op",
    "PowerSettings",
    "ResidualOp",
    "SpectralBound",
    "UnsupportedArchitecture",
    "empirical_lambda",
    "layers",
    "max_pool_overlap",
    "module_ops",
    "network_ops",
    "operator_norm",
    "register",
    "spectral_bound",
    "supported",
]
