"""Task heads on top of backbone features (semantic segmentation now; instance and detection later)."""
