"""The synthetic person's body: pose families, human proportions and joint ranges, and
the 3D points of a posed body (`data/synthetic.py` turns, places and draws it).

Apart from the drawing because it is the part one reads to change what people do (a
new pose family, other proportions), not how they look. Units: standing height 1,
pelvis at the origin, facing +z; arrays of two are [left, right].
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

SIDE = np.array([1.0, -1.0])  # index 0 = person's left = +x in the body frame
# Body proportions as fractions of standing height (head top to ground).
PROP = dict(torso=0.30, neck=0.10, head=0.065, shoulder=0.115, hip=0.085,
            upper_arm=0.175, forearm=0.155, thigh=0.245, shin=0.245)
POSES = {"stand": 0.3, "walk": 0.28, "arms": 0.2, "sit": 0.16, "random": 0.06}
# Extra body points after the 17 COCO joints (torso: the 8 corners of a chest-to-hip box).
HEAD, NECK, TOES, TORSO = 17, 18, 19, 21


def rot(axis: int, t: float) -> np.ndarray:
    """Rotation by t about body axis 0 = x (turns +y toward +z: bend forward), 1 = y
    (turns +z toward +x: facing), 2 = z (turns +x toward +y: side bend, lying down)."""
    return cv2.Rodrigues(np.eye(3)[axis] * t)[0]


def limb_dirs(flex: np.ndarray, abd: np.ndarray) -> np.ndarray:
    """Unit directions (2, 3) of a hanging limb flexed forward by `flex`, raised sideways
    (away from the body) by `abd`, for the left and right side at once."""
    cf = np.cos(flex)
    return np.stack([SIDE * cf * np.sin(abd), -cf * np.cos(abd), np.sin(flex)], axis=1)


def sample_pose(rng: np.random.Generator) -> dict[str, Any]:
    """Joint angles (radians, arrays are [left, right]) for one of a few pose families,
    so the set covers standing, walking, raised arms, sitting/crouching and odd poses."""
    kind = list(POSES)[rng.choice(len(POSES), p=list(POSES.values()))]
    u = lambda lo, hi, n=2: np.radians(rng.uniform(lo, hi, n))  # noqa: E731
    p = dict(arm_f=u(-15, 20), arm_a=u(3, 25), elbow=u(0, 35), leg_f=u(-8, 12),
             leg_a=u(0, 10), knee=u(0, 15), lean=u(-8, 12, 1)[0], side=u(-8, 8, 1)[0])
    if kind == "walk":
        swing = u(15, 40, 1)[0] * np.array([1.0, -1.0]) * rng.choice([-1, 1])
        p.update(leg_f=swing, arm_f=-0.8 * swing, elbow=u(10, 60), knee=u(5, 50))
    elif kind == "arms":
        p.update(arm_f=u(-30, 180), arm_a=u(0, 170), elbow=u(0, 140))
    elif kind == "sit":
        crouch = rng.random() < 0.4
        p.update(leg_f=u(90, 130) if crouch else u(60, 105), leg_a=u(0, 30),
                 knee=u(110, 150) if crouch else u(60, 120), arm_f=u(-20, 90),
                 elbow=u(0, 120), lean=u(15, 50, 1)[0] if crouch else u(-10, 25, 1)[0])
    elif kind == "random":
        p.update(arm_f=u(-40, 180), arm_a=u(0, 170), elbow=u(0, 150), leg_f=u(-30, 120),
                 leg_a=u(0, 45), knee=u(0, 150), lean=u(-20, 60, 1)[0],
                 side=u(-20, 20, 1)[0])
    p.update(head_yaw=u(-45, 45, 1)[0], head_pitch=u(-20, 20, 1)[0])
    return p


def body_points(rng: np.random.Generator, pose: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """3D body points (29, 3) for unit height, pelvis at the origin, facing +z, and unit
    normals (7, 3): nose, eyes, ears (they decide whether those can be seen at all), the
    head's and the chest's forward directions."""
    k = {name: v * rng.uniform(0.93, 1.07) for name, v in PROP.items()}
    torso = rot(0, pose["lean"]) @ rot(2, pose["side"])
    head = torso @ rot(1, pose["head_yaw"]) @ rot(0, -pose["head_pitch"])
    neck = torso @ np.array([0.0, k["torso"], 0.0])
    hc = neck + torso @ np.array([0.0, k["neck"], 0.0])
    face = np.array([[0, -0.15, 0.98], [0.38, 0.2, 0.85], [-0.38, 0.2, 0.85],
                     [0.98, 0.05, -0.1], [-0.98, 0.05, -0.1]])
    normals = np.concatenate([face[:3] * [0.6, 0.3, 1.0], face[3:], [[0, 0, 1]]])
    normals = (normals / np.linalg.norm(normals, axis=1, keepdims=True)) @ head.T
    normals = np.concatenate([normals, torso[None, :, 2]])
    lateral = np.stack([SIDE, 0 * SIDE, 0 * SIDE], axis=1)  # (2, 3): +x left, -x right
    shoulders = neck + k["shoulder"] * lateral @ torso.T
    elbows = shoulders + k["upper_arm"] * limb_dirs(pose["arm_f"], pose["arm_a"]) @ torso.T
    wrists = elbows + k["forearm"] * limb_dirs(pose["arm_f"] + pose["elbow"],
                                                pose["arm_a"]) @ torso.T
    hips = k["hip"] * lateral
    knees = hips + k["thigh"] * limb_dirs(pose["leg_f"], pose["leg_a"])
    ankles = knees + k["shin"] * limb_dirs(pose["leg_f"] - pose["knee"], pose["leg_a"])
    toes = ankles + np.array([0.0, -0.02, 0.075])
    corners = np.array([[x, 0, z] for x in (1, -1) for z in (1, -1)], dtype=np.float64)
    top = neck + (corners * [k["shoulder"] + 0.03, 0, 0.055]) @ torso.T
    bottom = corners * [k["hip"] + 0.035, 0, 0.05]
    pts = np.concatenate([hc + (face * k["head"]) @ head.T, np.stack([shoulders, elbows, wrists,
                          hips, knees, ankles]).reshape(12, 3), hc[None], neck[None],
                          toes, top, bottom])
    return pts, normals
