"""Classification and distillation losses, per example and averaged."""

import jax
import jax.numpy as jnp


def soft_cross_entropy(target_probs: jax.Array,
                       logits: jax.Array) -> jax.Array:
  """Per-example cross-entropy -sum_k p_k log softmax(logits)_k."""
  return -jnp.sum(target_probs * jax.nn.log_softmax(logits), axis=-1)


def onehot_cross_entropy(labels: jax.Array, logits: jax.Array) -> jax.Array:
  """Mean cross-entropy against integer labels."""
  return jnp.mean(soft_cross_entropy(
      jax.nn.one_hot(labels, logits.shape[-1]), logits))


def distillation_loss(teacher_logits: jax.Array, student_logits: jax.Array,
                      temperature: float) -> jax.Array:
  """Mean Hinton distillation: tau^2 * CE(softmax(t / tau), s / tau).

  The tau^2 factor keeps the gradient's scale independent of tau.
  """
  teacher_probs = jax.nn.softmax(
      jax.lax.stop_gradient(teacher_logits) / temperature)
  return temperature**2 * jnp.mean(
      soft_cross_entropy(teacher_probs, student_logits / temperature))


def mixed_target_loss(labels: jax.Array, teacher_logits: jax.Array,
                      student_logits: jax.Array, alpha: float,
                      temperature: float) -> jax.Array:
  """(1 - alpha) * one-hot CE + alpha * distillation, on the same images."""
  loss = 0.0
  if alpha < 1.0:
    loss += (1.0 - alpha) * onehot_cross_entropy(labels, student_logits)
  if alpha > 0.0:
    loss += alpha * distillation_loss(teacher_logits, student_logits,
                                      temperature)
  return loss


def top1_correct(labels: jax.Array, logits: jax.Array) -> jax.Array:
  return jnp.argmax(logits, axis=-1) == labels
