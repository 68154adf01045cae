"""Networks: one ResNet (student, labeler, encoder); the BigBiGAN modules."""
