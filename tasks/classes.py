"""Class vocabularies of the benchmarks (facts of the datasets, kept in one place)."""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = -1

SCANNET20 = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
    "bathtub", "otherfurniture",
)

# ScanNet200: the value stored in segment200.npy is the position in this tuple (Pointcept convention).
SCANNET200 = (
    "wall", "chair", "floor", "table", "door", "couch", "cabinet", "shelf", "desk", "office chair", "bed",
    "pillow", "sink", "picture", "window", "toilet", "bookshelf", "monitor", "curtain", "book", "armchair",
    "coffee table", "box", "refrigerator", "lamp", "kitchen cabinet", "towel", "clothes", "tv", "nightstand",
    "counter", "dresser", "stool", "cushion", "plant", "ceiling", "bathtub", "end table", "dining table",
    "keyboard", "bag", "backpack", "toilet paper", "printer", "tv stand", "whiteboard", "blanket",
    "shower curtain", "trash can", "closet", "stairs", "microwave", "stove", "shoe", "computer tower",
    "bottle", "bin", "ottoman", "bench", "board", "washing machine", "mirror", "copier", "basket",
    "sofa chair", "file cabinet", "fan", "laptop", "shower", "paper", "person", "paper towel dispenser",
    "oven", "blinds", "rack", "plate", "blackboard", "piano", "suitcase", "rail", "radiator",
    "recycling bin", "container", "wardrobe", "soap dispenser", "telephone", "bucket", "clock", "stand",
    "light", "laundry basket", "pipe", "clothes dryer", "guitar", "toilet paper holder", "seat", "speaker",
    "column", "bicycle", "ladder", "bathroom stall", "shower wall", "cup", "jacket", "storage bin",
    "coffee maker", "dishwasher", "paper towel roll", "machine", "mat", "windowsill", "bar", "toaster",
    "bulletin board", "ironing board", "fireplace", "soap dish", "kitchen counter", "doorframe",
    "toilet paper dispenser", "mini fridge", "fire extinguisher", "ball", "hat", "shower curtain rod",
    "water cooler", "paper cutter", "tray", "shower door", "pillar", "ledge", "toaster oven", "mouse",
    "toilet seat cover dispenser", "furniture", "cart", "storage container", "scale", "tissue box",
    "light switch", "crate", "power outlet", "decoration", "sign", "projector", "closet door",
    "vacuum cleaner", "candle", "plunger", "stuffed animal", "headphones", "dish rack", "broom",
    "guitar case", "range hood", "dustpan", "hair dryer", "water bottle", "handicap bar", "purse", "vent",
    "shower floor", "water pitcher", "mailbox", "bowl", "paper bag", "alarm clock", "music stand",
    "projector screen", "divider", "laundry detergent", "bathroom counter", "object", "bathroom vanity",
    "closet wall", "laundry hamper", "bathroom stall door", "ceiling light", "trash bin", "dumbbell",
    "stair rail", "tube", "bathroom cabinet", "cd case", "closet rod", "coffee kettle", "structure",
    "shower head", "keyboard piano", "case of water bottles", "coat rack", "storage organizer",
    "folded chair", "fire alarm", "power strip", "calendar", "poster", "potted plant", "luggage", "mattress",
)
assert len(SCANNET200) == 200

S3DIS13 = (
    "ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa", "bookcase",
    "board", "clutter",
)

# Structured3D's 25 classes in Pointcept's preprocessing (its NYU40 ids 1-9, 11, 14-19, 22, 24, 25, 32, 34, 35,
# 38-40, in this order); every other id is ignored (-1)
STRUCTURED3D25 = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "picture", "desk", "shelves",
    "curtain", "dresser", "pillow", "mirror", "ceiling", "refrigerator", "television", "nightstand", "sink", "lamp",
    "otherstructure", "otherfurniture", "otherprop",
)

SEMANTIC_KITTI19 = (
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist", "road",
    "parking", "sidewalk", "other-ground", "building", "fence", "vegetation", "trunk", "terrain", "pole",
    "traffic-sign",
)

# The official semantic-kitti.yaml learning map (raw id -> 1..19, 0 = unlabelled), shifted by -1 so that
# classes are 0..18 and unlabelled becomes IGNORE_INDEX (Pointcept convention).
SEMANTIC_KITTI_LEARNING_MAP = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9, 44: 10,
    48: 11, 49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19, 99: 0,
    252: 1, 253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}


def semantic_kitti_lut() -> np.ndarray:
    """Lookup table raw SemanticKITTI id (0..259) -> class 0..18 or IGNORE_INDEX; unknown ids map to -2."""
    lut = np.full(260, -2, dtype=np.int64)
    for raw, learned in SEMANTIC_KITTI_LEARNING_MAP.items():
        lut[raw] = learned - 1
    return lut


# nuScenes-lidarseg general classes in the order of the official category.json 'index' field.
NUSCENES_GENERAL32 = (
    "noise", "animal", "human.pedestrian.adult", "human.pedestrian.child",
    "human.pedestrian.construction_worker", "human.pedestrian.personal_mobility",
    "human.pedestrian.police_officer", "human.pedestrian.stroller", "human.pedestrian.wheelchair",
    "movable_object.barrier", "movable_object.debris", "movable_object.pushable_pullable",
    "movable_object.trafficcone", "static_object.bicycle_rack", "vehicle.bicycle", "vehicle.bus.bendy",
    "vehicle.bus.rigid", "vehicle.car", "vehicle.construction", "vehicle.emergency.ambulance",
    "vehicle.emergency.police", "vehicle.motorcycle", "vehicle.trailer", "vehicle.truck",
    "flat.driveable_surface", "flat.other", "flat.sidewalk", "flat.terrain", "static.manmade",
    "static.other", "static.vegetation", "vehicle.ego",
)

NUSCENES16 = (
    "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian", "traffic_cone",
    "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain", "manmade", "vegetation",
)
