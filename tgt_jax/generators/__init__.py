"""Teacher-generator families behind one interface (interface.py): the table
is families.py; BigBiGAN (the paper's) and a convolutional VAE."""
