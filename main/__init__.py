"""Text-to-audio diffusion on bird sounds: models, training modules, data and analysis."""
