"""Ponder pre-training: the model (backbone + volume + renderer), its data (views, rays, masking), the engine."""
