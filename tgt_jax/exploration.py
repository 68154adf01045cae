"""Exploring the teacher generator's latent space around real examples.

TGT's generator has learned the data manifold; new training points are found
by moving the latent code z = E(x) of a real image and decoding G(z~). The
paper names two ways, "sampling or gradient-based methods" [paper]; the exact
form of each below is ours (see shared notes, tgt_method.md):

- random:   z~ = z + sigma * eps, eps ~ N(0, I)            (isotropic)
- gradient: z^{t+1} = z^t + eta * g / ||g||, g = d/dz CE(h(G(z)), f(G(z)))
            ascends the student-teacher disagreement on the decoded image;
            normalised per example by default [ours]
- prior:    z~ ~ N(0, I), no encoder                       (ablation, ours)
"""

from typing import Callable

import jax
import jax.numpy as jnp


def perturb_latent(z: jax.Array, rng: jax.Array, sigma: float) -> jax.Array:
  """Isotropic Gaussian perturbation of scale `sigma` around each latent."""
  return z + sigma * jax.random.normal(rng, z.shape, z.dtype)


def sample_prior(rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Latents from the generator's N(0, I) prior."""
  return jax.random.normal(rng, shape, jnp.float32)


def ascend_latent(z: jax.Array,
                  disagreement: Callable[[jax.Array], jax.Array],
                  step_size: float, num_steps: int,
                  normalize: bool = True) -> jax.Array:
  """Gradient ascent on `disagreement(z) -> [N]` per-example values.

  The per-example values are summed before `jax.grad`, so each latent's
  gradient is that of its own example's value, provided `disagreement` lets
  no example depend on another (no batch statistics: see methods.py). With
  `normalize`, each example moves exactly `step_size` in L2 per step,
  whatever the loss scale.
  """
  grad_fn = jax.grad(lambda latent: jnp.sum(disagreement(latent)))

  # Unrolled: the number of steps is small (a Table 6 row), and an unrolled
  # loop lets XLA's cost analysis count every step (a while loop's body is
  # counted once), which the benchmark's FLOP accounting relies on.
  for _ in range(num_steps):
    direction = grad_fn(z)
    if normalize:
      norm = jnp.linalg.norm(direction, axis=-1, keepdims=True)
      direction = direction / jnp.maximum(norm, 1e-12)
    z = z + step_size * direction
  return z
