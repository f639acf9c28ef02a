"""si_lightning: stochastic interpolants with PyTorch Lightning."""
