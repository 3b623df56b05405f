"""Inference: guided sampling maths, the one seeded text -> audio generation, and the CombinedSampler pipeline."""
