"""Networks: one ResNet (student, labeler, encoder); the BigBiGAN and VAE
networks."""
