"""A small vectorised z-buffer rasteriser for shaded capsules, spheres and triangles.

Each primitive is evaluated only inside its screen bounding box (one window per
primitive, the same window size across the batch), which is what makes thousands of
64×64 images per second possible in numpy. Depth is per pixel (the capsule's front
surface, the triangle's plane), so limbs occlude each other correctly where a
per-primitive painter's order would not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Sub-pixel limbs would vanish between pixel centres; a joint must always lie on its own
# silhouette (0.75 px > half the pixel diagonal, so the nearest pixel centre is covered).
MIN_RADIUS_PX = 0.75

SUBJECT, OCCLUDER = 0, 1


@dataclass
class Canvas:
    """Render target for a batch of square images (flattened pixels).

    Pixels store which primitive won the depth test and its shade; colours are looked up
    once in :meth:`compose`, which keeps the per-primitive scatter to three scalars.
    """

    size: int
    depth: np.ndarray  # [B, S*S] float32, +inf where empty
    prim: np.ndarray  # [B, S*S] int16, -1 where empty
    shade: np.ndarray  # [B, S*S] float32
    palettes: list[np.ndarray]

    @classmethod
    def empty(cls, batch: int, size: int) -> Canvas:
        return cls(
            size=size,
            depth=np.full((batch, size * size), np.inf, np.float32),
            prim=np.full((batch, size * size), -1, np.int16),
            shade=np.zeros((batch, size * size), np.float32),
            palettes=[],
        )

    def add_palette(self, color: np.ndarray) -> int:
        """Register the colours [B, C, 3] of C primitives; returns their first id."""
        first = sum(p.shape[1] for p in self.palettes)
        self.palettes.append(np.asarray(color, np.float32))
        return first

    def compose_over(self, background: np.ndarray) -> np.ndarray:
        """Paint the drawn pixels over ``background`` [B, S, S, 3] float32 (in place);
        returns the drawn mask [B, S, S]."""
        palette = np.concatenate(self.palettes, axis=1)
        idx = np.flatnonzero(self.prim >= 0)
        b = idx // self.prim.shape[1]
        colors = palette[b, self.prim.ravel()[idx]] * self.shade.ravel()[idx, None]
        background.reshape(-1, 3)[idx] = colors
        return (self.prim >= 0).reshape(background.shape[:3])


def _windows(lo: np.ndarray, hi: np.ndarray, size: int, groups: int = 3):
    """Pixel grids of the images' windows for one primitive; lo/hi [B, 2] inclusive bounds.

    Images are split into ``groups`` by window size (one window size per group), so a
    few large instances do not make every image pay for the largest window.
    Yields (rows, xx, yy, valid, flat) with pixel arrays [len(rows), w*h].
    """
    lo = np.clip(lo, 0, size - 1)
    hi = np.clip(hi, -1, size - 1)
    ext = np.maximum(hi - lo + 1, 0)
    area = ext[:, 0] * ext[:, 1]
    order = np.argsort(area, kind="stable")
    for rows in np.array_split(order[area[order] > 0], groups):
        if rows.size == 0:
            continue
        wx, wy = int(ext[rows, 0].max()), int(ext[rows, 1].max())
        xs = lo[rows, 0, None] + np.arange(wx, dtype=np.int32)
        ys = lo[rows, 1, None] + np.arange(wy, dtype=np.int32)
        valid = (xs <= hi[rows, 0, None])[:, None, :] & (ys <= hi[rows, 1, None])[:, :, None]
        xx = np.broadcast_to(np.minimum(xs, size - 1)[:, None, :], valid.shape)
        yy = np.broadcast_to(np.minimum(ys, size - 1)[:, :, None], valid.shape)
        n = rows.size
        yield (
            rows,
            xx.reshape(n, -1).astype(np.float32),
            yy.reshape(n, -1).astype(np.float32),
            valid.reshape(n, -1),
            (yy * size + xx).reshape(n, -1),
        )


def _write(canvas: Canvas, b, f, depth, prim: int, shade) -> None:
    """Z-test and write candidate pixels (image index b, flat pixel f) of one primitive."""
    keep = depth < canvas.depth[b, f]
    b, f = b[keep], f[keep]
    canvas.depth[b, f] = depth[keep]
    canvas.prim[b, f] = prim
    canvas.shade[b, f] = shade[keep]


def draw_capsules(
    canvas: Canvas,
    a: np.ndarray,
    b: np.ndarray,
    ra: np.ndarray,
    rb: np.ndarray,
    za: np.ndarray,
    zb: np.ndarray,
    rmm: np.ndarray,
    color: np.ndarray,
    light: np.ndarray,
    ambient: np.ndarray,
) -> None:
    """Draw capsules (spheres when a == b), shaded as round limbs under a directional light.

    a, b [B, C, 2] endpoints (px); ra, rb [B, C] radii (px); za, zb [B, C] depths (mm);
    rmm [B, C] radius (mm, for the bulge toward the camera); color [B, C, 3];
    light [B, 3] unit vector towards the light (camera frame); ambient [B].
    """
    a, b, za, zb, rmm = (np.asarray(x, np.float32) for x in (a, b, za, zb, rmm))
    ra = np.maximum(ra, MIN_RADIUS_PX).astype(np.float32)
    rb = np.maximum(rb, MIN_RADIUS_PX).astype(np.float32)
    rmax = np.maximum(ra, rb)
    lo = np.floor(np.minimum(a, b) - rmax[..., None]).astype(np.int32)
    hi = np.ceil(np.maximum(a, b) + rmax[..., None]).astype(np.int32)
    first = canvas.add_palette(color)
    lx, ly, lz = (light[:, i].astype(np.float32) for i in range(3))
    amb = ambient.astype(np.float32)
    for c in range(a.shape[1]):
        for rows, xx, yy, valid, flat in _windows(lo[:, c], hi[:, c], canvas.size):
            ax, ay = a[rows, c, 0, None], a[rows, c, 1, None]
            dx = b[rows, c, 0, None] - ax
            dy = b[rows, c, 1, None] - ay
            px, py = xx - ax, yy - ay
            t = np.clip((px * dx + py * dy) / (dx * dx + dy * dy + 1e-9), 0.0, 1.0)
            ex, ey = px - t * dx, py - t * dy
            r = ra[rows, c, None] + t * (rb[rows, c, None] - ra[rows, c, None])
            s2 = (ex * ex + ey * ey) / (r * r)
            bi, ki = np.nonzero(valid & (s2 < 1.0))
            if bi.size == 0:
                continue
            # Depth and shading only for covered pixels (typically a fifth of the window).
            t, ex, ey, r, s2 = t[bi, ki], ex[bi, ki], ey[bi, ki], r[bi, ki], s2[bi, ki]
            img = rows[bi]
            nz = np.sqrt(1.0 - s2)
            depth = za[img, c] + t * (zb[img, c] - za[img, c]) - rmm[img, c] * nz
            diffuse = np.clip((ex * lx[img] + ey * ly[img]) / r - nz * lz[img], 0.0, 1.0)
            shade = amb[img] + (1.0 - amb[img]) * diffuse
            _write(canvas, img, flat[bi, ki], depth, first + c, shade)


def draw_triangles(
    canvas: Canvas,
    v: np.ndarray,
    z: np.ndarray,
    normal: np.ndarray,
    color: np.ndarray,
    light: np.ndarray,
    ambient: np.ndarray,
) -> None:
    """Draw flat-shaded triangles. v [B, T, 3, 2] px, z [B, T, 3] mm, normal [B, T, 3]
    unit normals facing the camera, color [B, T, 3]."""
    v, z = np.asarray(v, np.float32), np.asarray(z, np.float32)
    lo = np.floor(v.min(axis=2)).astype(np.int32)
    hi = np.ceil(v.max(axis=2)).astype(np.int32)
    amb = ambient[:, None].astype(np.float32)
    diffuse = np.clip(np.einsum("btk,bk->bt", normal, light), 0.0, 1.0)
    shade_t = (amb + (1.0 - amb) * diffuse).astype(np.float32)
    first = canvas.add_palette(color)
    for k in range(v.shape[1]):
        for rows, xx, yy, valid, flat in _windows(lo[:, k], hi[:, k], canvas.size):
            v0, v1, v2 = (v[rows, k, i] for i in range(3))
            den = (v1[:, 0] - v0[:, 0]) * (v2[:, 1] - v0[:, 1]) - (v1[:, 1] - v0[:, 1]) * (
                v2[:, 0] - v0[:, 0]
            )
            ok = np.abs(den) > 1e-6
            den = np.where(ok, den, 1.0)[:, None]

            def edge(p, q, xx=xx, yy=yy):
                return (q[:, 0, None] - p[:, 0, None]) * (yy - p[:, 1, None]) - (
                    q[:, 1, None] - p[:, 1, None]
                ) * (xx - p[:, 0, None])

            w0, w1, w2 = edge(v1, v2) / den, edge(v2, v0) / den, edge(v0, v1) / den
            inside = valid & ok[:, None] & (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
            bi, ki = np.nonzero(inside)
            if bi.size == 0:
                continue
            img = rows[bi]
            zk = z[img, k]
            depth = w0[bi, ki] * zk[:, 0] + w1[bi, ki] * zk[:, 1] + w2[bi, ki] * zk[:, 2]
            _write(canvas, img, flat[bi, ki], depth, first + k, shade_t[img, k])
