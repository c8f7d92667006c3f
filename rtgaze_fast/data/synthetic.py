"""A synthetic gaze dataset rendered by analytic ray casting (issue #8).

No real gaze data or pretrained weights can be downloaded here, so this module renders its own:
a procedural head (ellipsoids: skull, nose, ears, neck) with two spherical eyeballs seen through
almond-shaped eyelid openings, painted hair, brows, lips and lash lines, Lambert + ambient
lighting, seen by the EG3D cameras of ``rtgaze_fast.camera`` (same rays as the renderer).

Conventions
-----------
World frame: the EG3D world (the triplane box is [-0.5, 0.5]^3). The head faces +z, +y is up,
the frontal camera sits at (0, 0, 2.7) looking at (0, 0, 0.2). The frontal camera's OpenCV frame
is therefore world = diag(1, -1, -1) @ camera.

Gaze (pitch, yaw) radians, ETH-XGaze's formula, taken in the HEAD frame = the frontal camera's
frame: vector in that camera frame ``(-cos p sin y, -sin p, -cos p cos y)``, so in world
coordinates the eyeballs look along

    d_world = (-cos(p) sin(y), sin(p), cos(p) cos(y)).

(0, 0) looks along +z, into the frontal camera (both eyes parallel, no vergence). Positive pitch
looks up (+y world, up in the image); positive yaw looks towards world -x, i.e. towards the
LEFT of the frontal image (the subject's right), as in ETH-XGaze where positive yaw points to
camera -x. ``gaze_source`` / ``gaze_target`` of a sample are in this head frame, independent of
the camera. ``head_to_camera_gaze`` gives the same gaze in another camera's normalised frame
(ETH-XGaze's per-image label); ``head_pose_of_camera`` the head's forward direction (+z world)
in that camera frame with the same formula ((0, 0): facing the camera).

Depth: Euclidean distance t along the unit ray (the renderer's depth), for the target view at
``depth_resolution`` (default resolution // 4, the 512 -> 128 ratio of RTGaze), pixel-centre
rays, background filled with ``background_depth`` (default 3.3, the FFHQ ``ray_end``: the
renderer clamps empty rays to its largest sampled depth).

Images are float (3, H, W) in [-1, 1], RGB, rendered with ``supersample`` x ``supersample``
rays per pixel (box filter).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Dict, Sequence, Tuple

import torch

from ..camera import frontal_camera, rays_from_label, split_camera_label
from ..gaze import angular_error_deg, gaze_to_vector, vector_to_gaze  # noqa: F401 (angular_error_deg re-exported)

BACKGROUND_DEPTH = 3.3        # FFHQ ray_end
TEST_ID_OFFSET = 1_000_000    # test identities come from this id range on, train from 0
VAL_ID_OFFSET = 2_000_000     # validation identities (model selection), disjoint from both
ID_OFFSETS = {"train": 0, "test": TEST_ID_OFFSET, "val": VAL_ID_OFFSET}
VARIETIES = (1, 2)            # 1: the generator the embedded tiny weights were trained on; 2: wider (issue #19)
EDGE = 0.03                   # soft edge width (radians or world units) of painted features

# Materials of a ray hit.
_BG, _SKIN, _EYE, _SOCKET = 0, 1, 2, 3


@dataclass
class IdentityParams:
    """Everything about one synthetic subject (shape, colours, light), world units / RGB in [0, 1]."""
    head_center: Tuple[float, float, float]
    head_radii: Tuple[float, float, float]
    nose_center: Tuple[float, float, float]
    nose_radii: Tuple[float, float, float]
    ear_radii: Tuple[float, float, float]
    neck_radii: Tuple[float, float, float]
    eye_x: float            # eyeball centres at (+-eye_x, eye_y, eye_z)
    eye_y: float
    eye_z: float
    eye_radius: float
    open_half_width: float  # almond opening: |u| < 1, -lower (1-u^2) < v < upper (1-u^2)
    open_upper: float
    open_lower: float
    iris_angle: float       # angular radius of the iris / pupil on the eyeball (radians)
    pupil_angle: float
    mouth_y: float
    skin: Tuple[float, float, float]
    hair: Tuple[float, float, float]
    lips: Tuple[float, float, float]
    iris: Tuple[float, float, float]
    background: Tuple[float, float, float]
    hairline: float
    light_dir: Tuple[float, float, float]   # unit, world, towards the light
    ambient: float
    light_color: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    background2: Tuple[float, float, float] = None  # variety 2: vertical background gradient to this colour

    def to_dict(self) -> Dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _seed(*parts: int) -> int:
    s = 0x12345
    for p in parts:
        s = (s * 0x9E3779B1 + int(p) + 1) % (2 ** 61 - 1)
    return s


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _mix(a, b, t):
    return tuple(x + (y - x) * t for x, y in zip(a, b))


def make_identity(identity_id: int, seed: int = 0, variety: int = 1) -> IdentityParams:
    """Identity ``identity_id`` (global id: train ids from 0, test ids from TEST_ID_OFFSET, validation
    ids from VAL_ID_OFFSET). ``variety`` 2 redraws colours, eye shape and light over wider ranges
    from a second generator, so variety 1 stays the exact generator of the embedded tiny weights."""
    if variety not in VARIETIES:
        raise ValueError(f"variety must be one of {VARIETIES}, got {variety!r}")
    ip = _identity_v1(identity_id, seed)
    return ip if variety == 1 else _widen(ip, torch.Generator().manual_seed(_seed(seed, identity_id, 2)))


_HAIR = [(0.08, 0.06, 0.05), (0.3, 0.18, 0.1), (0.75, 0.6, 0.35), (0.45, 0.42, 0.4), (0.55, 0.2, 0.08),
         (0.85, 0.83, 0.8), (0.15, 0.15, 0.35), (0.03, 0.03, 0.03)]
_IRIS = [(0.35, 0.2, 0.08), (0.2, 0.4, 0.65), (0.25, 0.45, 0.25), (0.45, 0.33, 0.15), (0.45, 0.5, 0.55),
         (0.12, 0.08, 0.05), (0.6, 0.45, 0.15)]


def _jitter(g: torch.Generator, rgb, amount: float):
    return tuple(min(max(c * _u(g, 1 - amount, 1 + amount), 0.0), 1.0) for c in rgb)


def _widen(ip: IdentityParams, g: torch.Generator) -> IdentityParams:
    """Variety 2: skin from very pale to very dark with undertones, 8 hair and 7 iris colours (jittered),
    wider eye openings and irises, dimmer to harsher and tinted light, two-tone backgrounds."""
    t = _u(g, 0.0, 1.0)
    skin = _mix((0.98, 0.84, 0.74), (0.55, 0.38, 0.26), 2 * t) if t < 0.5 else \
        _mix((0.55, 0.38, 0.26), (0.2, 0.12, 0.08), 2 * t - 1)
    skin = _jitter(g, skin, 0.08)
    hair = _jitter(g, _HAIR[int(torch.randint(len(_HAIR), (), generator=g))], 0.15)
    iris = _jitter(g, _IRIS[int(torch.randint(len(_IRIS), (), generator=g))], 0.15)
    lx, ly = _u(g, -0.9, 0.9), _u(g, -0.4, 0.8)
    lz = math.sqrt(max(1 - lx * lx - ly * ly, 0.0)) + 0.2
    n = math.sqrt(lx * lx + ly * ly + lz * lz)
    warm = _u(g, -1.0, 1.0)
    r = ip.eye_radius
    return IdentityParams(**{**ip.to_dict(), **dict(
        skin=skin, hair=hair, iris=iris, lips=_mix(skin, (0.7, 0.25, 0.25), _u(g, 0.25, 0.65)),
        open_half_width=r * _u(g, 0.85, 1.15), open_upper=_u(g, 0.014, 0.032), open_lower=_u(g, 0.008, 0.02),
        iris_angle=_u(g, 0.45, 0.62), pupil_angle=_u(g, 0.15, 0.26), hairline=_u(g, 0.35, 0.7),
        background=tuple(_u(g, 0.05, 0.95) for _ in range(3)),
        background2=tuple(_u(g, 0.05, 0.95) for _ in range(3)),
        light_dir=(lx / n, ly / n, lz / n), ambient=_u(g, 0.2, 0.65),
        light_color=(1 + 0.12 * warm, 1.0, 1 - 0.12 * warm))})


def _identity_v1(identity_id: int, seed: int) -> IdentityParams:
    g = torch.Generator().manual_seed(_seed(seed, identity_id))
    rx, ry, rz = _u(g, 0.2, 0.235), _u(g, 0.28, 0.315), _u(g, 0.24, 0.27)
    cx, cy, cz = 0.0, _u(g, 0.0, 0.03), _u(g, 0.06, 0.09)
    eye_x, eye_y = _u(g, 0.072, 0.088), cy + _u(g, 0.03, 0.055)
    eye_r = _u(g, 0.042, 0.048)
    # Skin surface in front of the eye centre; the eyeball pokes 30-40 % of its radius out.
    zs = cz + rz * math.sqrt(max(1 - (eye_x / rx) ** 2 - ((eye_y - cy) / ry) ** 2, 0.0))
    eye_z = zs - eye_r * _u(g, 0.6, 0.7)
    nose_len = _u(g, 0.035, 0.05)
    nose_y = cy - _u(g, 0.03, 0.05)
    nose_zs = cz + rz * math.sqrt(max(1 - ((nose_y - cy) / ry) ** 2, 0.0))
    tone = _u(g, 0.0, 1.0)
    skin = _mix((0.96, 0.80, 0.68), (0.36, 0.23, 0.16), tone)
    skin = tuple(min(max(c * _u(g, 0.95, 1.05), 0.0), 1.0) for c in skin)
    hair_choice = [(0.08, 0.06, 0.05), (0.3, 0.18, 0.1), (0.75, 0.6, 0.35), (0.45, 0.42, 0.4)]
    hair = hair_choice[int(torch.randint(len(hair_choice), (), generator=g))]
    iris_choice = [(0.35, 0.2, 0.08), (0.2, 0.4, 0.65), (0.25, 0.45, 0.25), (0.45, 0.33, 0.15)]
    iris = iris_choice[int(torch.randint(len(iris_choice), (), generator=g))]
    lips = _mix(skin, (0.7, 0.25, 0.25), _u(g, 0.35, 0.6))
    background = tuple(_u(g, 0.15, 0.9) for _ in range(3))
    # Light from the front hemisphere, mostly from above.
    lx, ly = _u(g, -0.7, 0.7), _u(g, -0.1, 0.7)
    lz = math.sqrt(max(1 - lx * lx - ly * ly, 0.0)) + 0.3
    n = math.sqrt(lx * lx + ly * ly + lz * lz)
    return IdentityParams(
        head_center=(cx, cy, cz), head_radii=(rx, ry, rz),
        nose_center=(0.0, nose_y, nose_zs - 0.5 * nose_len),
        nose_radii=(_u(g, 0.022, 0.03), _u(g, 0.045, 0.06), nose_len),
        ear_radii=(0.02, _u(g, 0.05, 0.06), 0.035),
        neck_radii=(_u(g, 0.1, 0.13), 0.2, _u(g, 0.1, 0.12)),
        eye_x=eye_x, eye_y=eye_y, eye_z=eye_z, eye_radius=eye_r,
        open_half_width=eye_r * _u(g, 0.95, 1.05), open_upper=_u(g, 0.019, 0.026),
        open_lower=_u(g, 0.012, 0.017), iris_angle=_u(g, 0.5, 0.58), pupil_angle=_u(g, 0.18, 0.24),
        mouth_y=cy - _u(g, 0.13, 0.15), skin=skin, hair=hair, lips=lips, iris=iris,
        background=background, hairline=_u(g, 0.45, 0.6),
        light_dir=(lx / n, ly / n, lz / n), ambient=_u(g, 0.3, 0.5))


# ---------------------------------------------------------------- gaze conventions

_HEAD_FROM_FRONTAL = torch.tensor([1.0, -1.0, -1.0])   # world = diag(1,-1,-1) @ frontal camera


def gaze_to_world(gaze: torch.Tensor) -> torch.Tensor:
    """Head-frame gaze (..., 2) -> world eyeball direction (-cos p sin y, sin p, cos p cos y)."""
    return gaze_to_vector(torch.as_tensor(gaze, dtype=torch.float32)) * _HEAD_FROM_FRONTAL


def world_to_gaze(d: torch.Tensor) -> torch.Tensor:
    """World direction (..., 3) -> head-frame (pitch, yaw)."""
    return vector_to_gaze(torch.as_tensor(d, dtype=torch.float32) * _HEAD_FROM_FRONTAL)


def head_to_camera_gaze(gaze: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """Head-frame gaze (2,) -> the same eye direction as (pitch, yaw) in a (25,) camera's frame."""
    rot = split_camera_label(camera.reshape(1, 25))[0][0, :3, :3]
    return vector_to_gaze(rot.T @ gaze_to_world(gaze))


def head_pose_of_camera(camera: torch.Tensor) -> torch.Tensor:
    """(pitch, yaw) of the head's forward direction (+z world) in a (25,) camera's frame."""
    rot = split_camera_label(camera.reshape(1, 25))[0][0, :3, :3]
    return vector_to_gaze(rot.T @ torch.tensor([0.0, 0.0, 1.0]))


# ---------------------------------------------------------------- ray casting

def _ellipsoid_hit(o: torch.Tensor, d: torch.Tensor, center, radii) -> torch.Tensor:
    """Entry distance t (N,) of unit rays into an axis-aligned ellipsoid; inf on a miss.

    Scaling space by 1/radii keeps the ray parameter, so t stays the distance along the unit ray.
    """
    c, r = torch.tensor(center, dtype=o.dtype), torch.tensor(radii, dtype=o.dtype)
    oo, dd = (o - c) / r, d / r
    a = (dd * dd).sum(-1)
    b = (oo * dd).sum(-1)
    cc = (oo * oo).sum(-1) - 1
    disc = b * b - a * cc
    t = (-b - torch.sqrt(disc.clamp(min=0))) / a
    return torch.where((disc > 0) & (t > 0), t, torch.full_like(t, math.inf))


def _ellipsoid_normal(p: torch.Tensor, center, radii) -> torch.Tensor:
    c, r = torch.tensor(center, dtype=p.dtype), torch.tensor(radii, dtype=p.dtype)
    return torch.nn.functional.normalize((p - c) / (r * r), dim=-1)


def _eye_centers(ip: IdentityParams):
    return [(-ip.eye_x, ip.eye_y, ip.eye_z), (ip.eye_x, ip.eye_y, ip.eye_z)]


def _in_opening(p: torch.Tensor, ip: IdentityParams) -> torch.Tensor:
    """Whether points (N, 3) lie in either almond eyelid opening (a prism along z, front side)."""
    inside = torch.zeros(p.shape[0], dtype=torch.bool)
    for ex, ey, ez in _eye_centers(ip):
        u = (p[:, 0] - ex) / ip.open_half_width
        v = p[:, 1] - ey
        k = (1 - u * u).clamp(min=0)
        inside |= (u.abs() < 1) & (v < ip.open_upper * k) & (v > -ip.open_lower * k) & (p[:, 2] > ez)
    return inside


def _cast(ip: IdentityParams, o: torch.Tensor, d: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Nearest surface of the head scene along each ray: t, material, point, normal, eye index."""
    n = o.shape[0]
    inf = torch.full((n,), math.inf)
    hc = ip.head_center
    t_head = _ellipsoid_hit(o, d, hc, ip.head_radii)
    p_head = o + d * torch.where(t_head.isfinite(), t_head, inf.new_zeros(n))[:, None]
    opening = t_head.isfinite() & _in_opening(p_head, ip)
    shapes = [  # (t, centre, radii); index 0..1 eyeballs, 2 head, 3.. skin shapes
        *[(_ellipsoid_hit(o, d, c, (ip.eye_radius,) * 3), c, (ip.eye_radius,) * 3) for c in _eye_centers(ip)],
        (torch.where(opening, inf, t_head), hc, ip.head_radii),
        (_ellipsoid_hit(o, d, ip.nose_center, ip.nose_radii), ip.nose_center, ip.nose_radii),
        *[(_ellipsoid_hit(o, d, c, ip.ear_radii), c, ip.ear_radii)
          for c in [(-hc[0] - ip.head_radii[0], ip.eye_y - 0.03, hc[2] - 0.01),
                    (hc[0] + ip.head_radii[0], ip.eye_y - 0.03, hc[2] - 0.01)]],
        (_ellipsoid_hit(o, d, (0.0, hc[1] - ip.head_radii[1] - 0.02, hc[2] - 0.04), ip.neck_radii),
         (0.0, hc[1] - ip.head_radii[1] - 0.02, hc[2] - 0.04), ip.neck_radii),
    ]
    ts = torch.stack([s[0] for s in shapes], -1)
    t, idx = ts.min(-1)
    hit = t.isfinite()
    # Through an opening the eyeball should be next; where it is missed, a dark socket shows.
    socket = opening & (~hit | ((idx > 1) & (t > t_head)))
    t = torch.where(socket, t_head, t)
    hit = hit | socket
    p = o + d * torch.where(hit, t, torch.zeros_like(t))[:, None]
    normal = torch.zeros_like(p)
    for k, (_, c, r) in enumerate(shapes):
        sel = (idx == k) & hit & ~socket
        if sel.any():
            normal[sel] = _ellipsoid_normal(p[sel], c, r)
    normal[socket] = _ellipsoid_normal(p[socket], hc, ip.head_radii)
    on_eye = hit & ~socket & (idx <= 1)
    # Eyeball points outside the opening are the eyelid: skin over the eyeball.
    eye_visible = on_eye & _in_opening(p, ip)
    material = torch.full((n,), _BG, dtype=torch.long)
    material[hit] = _SKIN
    material[eye_visible] = _EYE
    material[socket] = _SOCKET
    return {"t": torch.where(hit, t, inf), "material": material, "point": p, "normal": normal,
            "eye": idx.clamp(max=1), "on_head": hit & ~socket & (idx == 2), "dir": d}


# ---------------------------------------------------------------- shading

def _soft(x: torch.Tensor, width: float = EDGE) -> torch.Tensor:
    """0 -> 1 ramp around x = 0 (anti-aliased feature edge)."""
    return (x / width + 0.5).clamp(0, 1)


def _skin_albedo(ip: IdentityParams, geo: Dict[str, torch.Tensor]) -> torch.Tensor:
    p = geo["point"]
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    col = torch.tensor(ip.skin).expand(p.shape[0], 3).clone()
    # Lips.
    lips = _soft(1 - (x / 0.05) ** 2 - ((y - ip.mouth_y) / 0.014) ** 2, 0.3) * (z > 0)
    col = torch.lerp(col, torch.tensor(ip.lips).expand_as(col), lips[:, None])
    # Brows and lash lines around each eye.
    for ex, ey, _ in _eye_centers(ip):
        u = (x - ex) / (ip.open_half_width * 1.25)
        bv = (y - ey - ip.open_upper - 0.028 + 0.01 * u * u) / 0.008
        brow = _soft(1 - u * u - bv * bv, 0.4) * (z > 0)
        col = torch.lerp(col, torch.tensor(ip.hair).expand_as(col) * 0.9, brow[:, None])
        ul = (x - ex) / ip.open_half_width
        k = (1 - ul * ul).clamp(min=0)
        lash = ((ul.abs() < 1.08) & (y - ey > ip.open_upper * k - 0.002)
                & (y - ey < ip.open_upper * k + 0.005) & (z > ip.eye_z)).float()
        col = torch.lerp(col, torch.full_like(col, 0.05), 0.85 * lash[:, None])
    # Hair over the top and back of the skull.
    q = [(p[:, i] - ip.head_center[i]) / ip.head_radii[i] for i in range(3)]
    hair = _soft(q[1] - (ip.hairline - 0.5 * (1 - q[2])), 0.06) * geo["on_head"]
    return torch.lerp(col, torch.tensor(ip.hair).expand_as(col), hair[:, None])


def _eye_albedo(ip: IdentityParams, geo: Dict[str, torch.Tensor], gazes: torch.Tensor) -> torch.Tensor:
    """(K, M, 3) eyeball colours of M eye points for K gazes (K, 2)."""
    centres = torch.tensor(_eye_centers(ip))[geo["eye"]]
    n_e = (geo["point"] - centres) / ip.eye_radius
    g = gaze_to_world(gazes)                                       # (K, 3)
    ang = torch.acos((n_e[None] * g[:, None]).sum(-1).clamp(-1, 1))  # (K, M)
    iris_t = _soft(ip.iris_angle - ang)
    pupil_t = _soft(ip.pupil_angle - ang)
    sclera = torch.tensor([0.93, 0.9, 0.88])
    # Iris brighter towards the pupil, dark limbus at its rim.
    radial = (ang / ip.iris_angle).clamp(0, 1)[..., None]
    iris = torch.tensor(ip.iris) * (1.3 - 0.8 * radial ** 3)
    col = torch.lerp(sclera.expand_as(iris), iris, iris_t[..., None])
    return torch.lerp(col, torch.full_like(col, 0.02), pupil_t[..., None])


def _shade(ip: IdentityParams, geo: Dict[str, torch.Tensor], gazes: torch.Tensor) -> torch.Tensor:
    """(K, M, 3) colours in [0, 1] of M cast rays under K gazes."""
    mat = geo["material"]
    m = mat.shape[0]
    albedo = torch.tensor(ip.background).expand(m, 3).clone()
    if ip.background2 is not None:  # top to bottom across the frame (ray direction's world y)
        ramp = (0.5 - 4 * geo["dir"][:, 1]).clamp(0, 1)[:, None]
        albedo = torch.lerp(albedo, torch.tensor(ip.background2).expand(m, 3), ramp)
    skin = mat == _SKIN
    if skin.any():
        albedo[skin] = _skin_albedo(ip, {k: v[skin] for k, v in geo.items()})
    albedo[mat == _SOCKET] = torch.tensor(ip.skin) * 0.15
    light = torch.tensor(ip.light_dir)
    lit = ip.ambient + (1 - ip.ambient) * (geo["normal"] @ light).clamp(min=0)
    lit = torch.where(mat == _BG, torch.ones_like(lit), lit)[:, None]
    if ip.light_color != (1.0, 1.0, 1.0):
        lit = torch.where((mat == _BG)[:, None], lit, lit * torch.tensor(ip.light_color))
    out = (albedo * lit).expand(gazes.shape[0], m, 3).clone()
    eye = mat == _EYE
    if eye.any():
        out[:, eye] = _eye_albedo(ip, {k: v[eye] for k, v in geo.items()}, gazes) * lit[eye]
    return out.clamp(0, 1)


def _rays(camera: torch.Tensor, resolution: int) -> Tuple[torch.Tensor, torch.Tensor]:
    o, d = rays_from_label(camera.reshape(1, 25).float(), resolution)
    return o[0], d[0]


def _pixel_order(x: torch.Tensor, resolution: int, ss: int) -> torch.Tensor:
    """Rays of a (resolution*ss)^2 grid -> (resolution^2, ss^2, ...) grouped by output pixel."""
    tail = x.shape[1:]
    x = x.reshape(resolution, ss, resolution, ss, *tail).transpose(1, 2)
    return x.reshape(resolution * resolution, ss * ss, *tail)


def render(ip: IdentityParams, camera: torch.Tensor, gaze: Sequence[float], resolution: int = 128,
           supersample: int = 2) -> Dict[str, torch.Tensor]:
    """Render one view: ``image`` (3, H, W) in [-1, 1] and ``eye_mask`` (1, H, W) in {0, 1}.

    ``eye_mask``: the eye region, i.e. pixels whose surface point lies within an ellipse around
    an eyelid opening (eyeball, lids, lashes), computed on the geometry so it does not depend on
    the gaze.
    """
    o, d = _rays(camera, resolution * supersample)
    geo = _cast(ip, o, d)
    col = _shade(ip, geo, torch.as_tensor(gaze, dtype=torch.float32).reshape(1, 2))[0]
    col = _pixel_order(col, resolution, supersample).mean(1)
    region = _pixel_order(_eye_region(ip, geo).float(), resolution, supersample).amax(1)
    return {"image": (col * 2 - 1).T.reshape(3, resolution, resolution),
            "eye_mask": region.reshape(1, resolution, resolution)}


def _eye_region(ip: IdentityParams, geo: Dict[str, torch.Tensor]) -> torch.Tensor:
    p = geo["point"]
    region = torch.zeros(p.shape[0], dtype=torch.bool)
    for ex, ey, ez in _eye_centers(ip):
        u = (p[:, 0] - ex) / (1.4 * ip.open_half_width)
        v = (p[:, 1] - ey - 0.25 * (ip.open_upper - ip.open_lower)) / (1.6 * ip.open_upper + 0.01)
        region |= (u * u + v * v < 1) & (p[:, 2] > ez - ip.eye_radius)
    return region & (geo["material"] != _BG)


def render_depth(ip: IdentityParams, camera: torch.Tensor, resolution: int,
                 background_depth: float = BACKGROUND_DEPTH) -> torch.Tensor:
    """(1, R, R) ray depth t at pixel centres (the renderer's rays); background = background_depth."""
    o, d = _rays(camera, resolution)
    t = _cast(ip, o, d)["t"]
    t = torch.where(t.isfinite(), t, torch.full_like(t, background_depth))
    return t.reshape(1, resolution, resolution)


# ---------------------------------------------------------------- gaze estimator

def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (K, 3, h, w), replicate padding; sigma in pixels (0: none)."""
    if sigma <= 0:
        return x
    r = int(math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    k = (k / k.sum()).expand(3, 1, 1, -1)
    x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (r, r, 0, 0), mode="replicate"), k, groups=3)
    return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 0, r, r), mode="replicate"),
                                      k.transpose(2, 3), groups=3)


def estimate_gaze(image: torch.Tensor, identity_params: IdentityParams, camera: torch.Tensor,
                  supersample: int = 2, pitch_range: float = 0.8, yaw_range: float = 1.0,
                  coarse_step: float = 0.1, refine_rounds: int = 3,
                  blur_sigmas: Sequence[float] = (0.0, 1.0, 2.0, 3.0)) -> Tuple[float, float]:
    """Head-frame (pitch, yaw) of the eyes in ``image`` (3, H, W) in [-1, 1], by analysis by synthesis.

    The scene geometry does not depend on the gaze, so the rays are cast once (over a box around
    the eyes) and only the eyeball points are re-shaded per candidate gaze. The gaze minimises the
    L2 between the image and the render over the pixels where an eyeball shows. A model's output
    may be blurrier than the generator, so the render is also compared blurred by each of
    ``blur_sigmas`` (pixels) and the best blur is kept. Search: a coarse grid over
    [-pitch_range, pitch_range] x [-yaw_range, yaw_range], then ``refine_rounds`` 5x5 grids
    around the best, each 4x finer.
    """
    res = image.shape[-1]
    if image.shape != (3, res, res):
        raise ValueError(f"image must be (3, R, R), got {tuple(image.shape)}")
    o, d = _rays(camera, res * supersample)
    geo = _cast(identity_params, o, d)
    eye_pix = _pixel_order(geo["material"] == _EYE, res, supersample).any(1).reshape(res, res)
    if not eye_pix.any():
        raise ValueError("no eyeball is visible from this camera")
    # Box around the eyes with room for the widest blur.
    margin = int(math.ceil(3 * max(blur_sigmas))) + 1
    rows, cols = eye_pix.any(1).nonzero()[:, 0], eye_pix.any(0).nonzero()[:, 0]
    r0, r1 = max(int(rows[0]) - margin, 0), min(int(rows[-1]) + margin + 1, res)
    c0, c1 = max(int(cols[0]) - margin, 0), min(int(cols[-1]) + margin + 1, res)
    box = torch.zeros(res, res, dtype=torch.bool)
    box[r0:r1, c0:c1] = True
    pix = box.reshape(-1).nonzero()[:, 0]
    sub = {k: _pixel_order(v, res, supersample)[pix].flatten(0, 1) for k, v in geo.items()}
    target = (image.float()[:, r0:r1, c0:c1] + 1) / 2
    weight = eye_pix[r0:r1, c0:c1].float()

    def losses(gazes: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
        """(len(sigmas), K) losses; each candidate is shaded once for every blur."""
        out = []
        for chunk in gazes.split(32):
            col = _shade(identity_params, sub, chunk).reshape(chunk.shape[0], r1 - r0, c1 - c0, -1, 3).mean(3)
            col = col.permute(0, 3, 1, 2)
            out.append(torch.stack([(((_gaussian_blur(col, s) - target) ** 2).sum(1) * weight).sum((1, 2))
                                    for s in sigmas]))
        return torch.cat(out, 1)

    def grid(cp: float, cy: float, hp: float, hy: float, n_p: int, n_y: int) -> torch.Tensor:
        gp, gy = torch.meshgrid(torch.linspace(cp - hp, cp + hp, n_p),
                                torch.linspace(cy - hy, cy + hy, n_y), indexing="ij")
        return torch.stack([gp.reshape(-1), gy.reshape(-1)], -1)

    cands = grid(0.0, 0.0, pitch_range, yaw_range, int(round(2 * pitch_range / coarse_step)) + 1,
                 int(round(2 * yaw_range / coarse_step)) + 1)
    scores = losses(cands, blur_sigmas)   # (sigmas, candidates)
    flat = int(scores.argmin())
    sigma, best = blur_sigmas[flat // cands.shape[0]], cands[flat % cands.shape[0]]
    step = coarse_step
    for _ in range(refine_rounds):
        step /= 4
        cands = grid(float(best[0]), float(best[1]), 2 * step, 2 * step, 5, 5)
        best = cands[losses(cands, (sigma,))[0].argmin()]
    return float(best[0]), float(best[1])


# ---------------------------------------------------------------- dataset

class SyntheticGaze(torch.utils.data.Dataset):
    """Procedural gaze-redirection pairs; deterministic for (seed, split, index).

    Item ``i`` is identity ``i // samples_per_identity`` (global id = that index, plus
    TEST_ID_OFFSET for ``split="test"`` and VAL_ID_OFFSET for ``split="val"``, so training, test
    and validation subjects never coincide) drawn by ``make_identity(id, seed, variety)``, with its
    own source/target gazes and cameras drawn from a generator seeded by (seed, global id, i).
    Sample keys: ``image`` (3, R, R) (source gaze, source camera); ``target`` (target gaze,
    source camera) and ``novel_view`` (target gaze, novel camera), both (3, T, T) with T =
    ``target_resolution`` (default R; the model's output size when training), all in [-1, 1];
    ``depth`` / ``depth_novel`` (1, D, D) of the target / novel view; ``eye_mask`` /
    ``eye_mask_novel`` (1, T, T) of the source camera (the same for source and target: the mask
    is geometric) / the novel camera; ``gaze_source``, ``gaze_target`` (2,) head-frame (pitch,
    yaw); ``camera``, ``camera_novel`` (25,); ``head_pose`` (2,) of the source camera;
    ``identity`` (global id).
    """

    def __init__(self, n_identities: int, seed: int = 0, resolution: int = 128, split: str = "train",
                 samples_per_identity: int = 8, depth_resolution: int = None, supersample: int = 2,
                 target_resolution: int = None,
                 gaze_range: Tuple[float, float] = (0.35, 0.5), head_range: Tuple[float, float] = (0.2, 0.35),
                 background_depth: float = BACKGROUND_DEPTH, variety: int = 2):
        if split not in ID_OFFSETS:
            raise ValueError(f"split must be one of {tuple(ID_OFFSETS)}, got {split!r}")
        if variety not in VARIETIES:
            raise ValueError(f"variety must be one of {VARIETIES}, got {variety!r}")
        self.n_identities, self.seed, self.resolution, self.split = n_identities, seed, resolution, split
        self.variety = variety
        self.samples_per_identity = samples_per_identity
        self.target_resolution = target_resolution or resolution
        self.depth_resolution = depth_resolution or max(resolution // 4, 1)
        self.supersample, self.background_depth = supersample, background_depth
        self.gaze_range, self.head_range = gaze_range, head_range   # (pitch, yaw) half-ranges, radians

    def __len__(self) -> int:
        return self.n_identities * self.samples_per_identity

    def identity_id(self, index: int) -> int:
        return index // self.samples_per_identity + ID_OFFSETS[self.split]

    def identity(self, index: int) -> IdentityParams:
        return make_identity(self.identity_id(index), self.seed, self.variety)

    def sample_labels(self, index: int) -> Dict[str, torch.Tensor]:
        """Gazes and cameras of item ``index`` (cheap: no rendering)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        g = torch.Generator().manual_seed(_seed(self.seed, self.identity_id(index), index, 7))

        def pair(half: Tuple[float, float]) -> torch.Tensor:
            return (torch.rand(2, generator=g) * 2 - 1) * torch.tensor(half)

        gs, gt, cs, cn = pair(self.gaze_range), pair(self.gaze_range), pair(self.head_range), pair(self.head_range)
        camera = frontal_camera(yaw=float(cs[1]), pitch=float(cs[0]))[0]
        return {"gaze_source": gs, "gaze_target": gt, "camera": camera,
                "camera_novel": frontal_camera(yaw=float(cn[1]), pitch=float(cn[0]))[0],
                "head_pose": head_pose_of_camera(camera)}

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        lab = self.sample_labels(index)
        ip = self.identity(index)
        r, t, ss, d = self.resolution, self.target_resolution, self.supersample, self.depth_resolution
        src = render(ip, lab["camera"], lab["gaze_source"], r, ss)
        tgt = render(ip, lab["camera"], lab["gaze_target"], t, ss)
        nov = render(ip, lab["camera_novel"], lab["gaze_target"], t, ss)
        return {"image": src["image"], "target": tgt["image"], "novel_view": nov["image"],
                "depth": render_depth(ip, lab["camera"], d, self.background_depth),
                "depth_novel": render_depth(ip, lab["camera_novel"], d, self.background_depth),
                "eye_mask": tgt["eye_mask"], "eye_mask_novel": nov["eye_mask"],
                "identity": self.identity_id(index), **lab}


def rig_cameras(n_cams: int) -> torch.Tensor:
    """(n_cams, 25) fixed camera rig of write_hdf5: camera 0 frontal, the others on a yaw/pitch grid."""
    yaws = torch.linspace(-0.35, 0.35, 5)
    pitches = torch.tensor([0.0, -0.18, 0.18])
    grid = [(0.0, 0.0)] + [(float(p), float(y)) for p in pitches for y in yaws if (p, y) != (0, 0)]
    if not 1 <= n_cams <= len(grid):
        raise ValueError(f"n_cams must be in [1, {len(grid)}], got {n_cams}")
    return torch.stack([frontal_camera(yaw=y, pitch=p)[0] for p, y in grid[:n_cams]])


def write_hdf5(out_dir: str, n_identities: int, seed: int = 0, split: str = "train", n_frames: int = 6,
               n_cams: int = 4, resolution: int = 128, depth_resolution: int = None, supersample: int = 2,
               gaze_range: Tuple[float, float] = (0.35, 0.5),
               background_depth: float = BACKGROUND_DEPTH) -> list:
    """Cache subjects as ETH-XGaze-style HDF5 files ``out_dir/subject{id:07d}.h5``; returns the paths.

    Like ETH-XGaze, a subject has ``n_frames`` gazes each seen by the same ``n_cams`` cameras
    (rig_cameras), rows frame-major: row = frame * n_cams + cam. ETH-XGaze keys:
    ``face_patch`` (N, R, R, 3) uint8 BGR; ``face_gaze`` (N, 2) float32 (pitch, yaw) in the
    row's camera frame (ETH-XGaze's label); ``face_head_pose`` (N, 2) head forward in that camera
    frame; ``cam_index``, ``frame_index`` (N, 1) int. Extra synthetic keys: ``face_gaze_head``
    (N, 2) the gaze in the head frame (what SyntheticGaze calls gaze_*); ``camera`` (N, 25) the
    label; ``depth`` (N, D, D) float32 ray depth t (background = attribute ``background_depth``);
    ``eye_mask`` (N, R, R) uint8 in {0, 1}. File attributes: seed, split, identity, resolution,
    depth_resolution, and ``identity_params`` (a repr of IdentityParams.to_dict()).
    """
    import h5py
    import numpy as np

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    depth_resolution = depth_resolution or max(resolution // 4, 1)
    os.makedirs(out_dir, exist_ok=True)
    cams = rig_cameras(n_cams)
    paths = []
    for i in range(n_identities):
        gid = i + (TEST_ID_OFFSET if split == "test" else 0)
        ip = make_identity(gid, seed)
        g = torch.Generator().manual_seed(_seed(seed, gid, 11))
        gazes = (torch.rand(n_frames, 2, generator=g) * 2 - 1) * torch.tensor(gaze_range)
        rows = {k: [] for k in ("face_patch", "face_gaze", "face_head_pose", "cam_index", "frame_index",
                                "face_gaze_head", "camera", "depth", "eye_mask")}
        depths = [render_depth(ip, c, depth_resolution, background_depth)[0].numpy() for c in cams]
        for f in range(n_frames):
            for c in range(n_cams):
                out = render(ip, cams[c], gazes[f], resolution, supersample)
                rgb = ((out["image"].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
                rows["face_patch"].append(rgb[..., ::-1])
                rows["face_gaze"].append(head_to_camera_gaze(gazes[f], cams[c]).numpy())
                rows["face_head_pose"].append(head_pose_of_camera(cams[c]).numpy())
                rows["cam_index"].append([c])
                rows["frame_index"].append([f])
                rows["face_gaze_head"].append(gazes[f].numpy())
                rows["camera"].append(cams[c].numpy())
                rows["depth"].append(depths[c])
                rows["eye_mask"].append(out["eye_mask"][0].numpy().astype(np.uint8))
        path = os.path.join(out_dir, f"subject{gid:07d}.h5")
        dtypes = {"face_patch": np.uint8, "cam_index": np.int64, "frame_index": np.int64, "eye_mask": np.uint8}
        with h5py.File(path, "w") as h:
            for k, v in rows.items():
                h.create_dataset(k, data=np.stack(v).astype(dtypes.get(k, np.float32)))
            h.attrs.update({"seed": seed, "split": split, "identity": gid, "resolution": resolution,
                            "depth_resolution": depth_resolution, "background_depth": background_depth,
                            "identity_params": repr(ip.to_dict())})
        paths.append(path)
    return paths

