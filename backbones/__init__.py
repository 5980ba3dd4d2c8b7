"""What turns points or images into features: the registry, 3D sparse-conv nets, timm 2D nets and lifting."""
