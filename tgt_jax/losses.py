"""Classification and distillation losses, per example and averaged."""

import jax
import jax.numpy as jnp


def soft_cross_entropy(target_probs: jax.Array,
                       logits: jax.Array) -> jax.Array:
  """Per-example cross-entropy -sum_k p_k log softmax(logits)_k."""
  return -jnp.sum(target_probs * jax.nn.log_softmax(logits), axis=-1)


def onehot_cross_entropy(labels: jax.Array, logits: jax.Array) -> jax.Array:
  """Mean cross-entropy against integer labels [N], or against mixtures of
  one-hot labels [N, K] (a mixed image's label, see methods.mixup)."""
  if labels.ndim < logits.ndim:
    labels = jax.nn.one_hot(labels, logits.shape[-1])
  return jnp.mean(soft_cross_entropy(labels, logits))


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
                      temperature: float, onehot_offset=0.0,
                      distill_offset=0.0) -> jax.Array:
  """(1 - alpha) * one-hot CE + alpha * distillation, on the same images.

  `labels`: integer labels, or mixed one-hot labels (see
  `onehot_cross_entropy`).
  The offsets are added to the student's logits inside each part (a long-tail
  adjustment, see `LongTailAdjustment` in train_steps); 0 for plain losses.
  """
  loss = 0.0
  if alpha < 1.0:
    loss += (1.0 - alpha) * onehot_cross_entropy(
        labels, student_logits + onehot_offset)
  if alpha > 0.0:
    loss += alpha * distillation_loss(
        teacher_logits, student_logits + distill_offset, temperature)
  return loss


def top1_correct(labels: jax.Array, logits: jax.Array) -> jax.Array:
  return jnp.argmax(logits, axis=-1) == labels


# Long-tail losses: train on long-tailed data, predict as if balanced. Both
# add a log prior to the logits inside the softmax and predict with the
# plain logits (argmax f(x)), so the classifier f learns the balanced
# posterior: logit adjustment (Menon et al., ICLR 2021, eq. 10, tau = 1)
# adds log pi, Balanced Softmax (Ren et al., NeurIPS 2020, eq. 4) log n.
# train_steps.LongTailAdjustment computes the offsets; the losses above
# take the adjusted logits.
LONG_TAIL_LOSSES = ('none', 'logit_adjusted', 'balanced_softmax')
