"""Teacher Guided Training (Zaheer et al., ICLR 2023) in JAX/Flax."""
