"""What turns a feature volume into images: rays, samplers, fields, compositing (reference + Triton), losses."""
