"""Classifiers, the U-Net and the model registry."""
