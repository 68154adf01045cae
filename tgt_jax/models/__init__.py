"""Networks: one ResNet for student, labeler and encoder; the BigBiGAN modules."""
