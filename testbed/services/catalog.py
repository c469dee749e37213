"""A deterministic synthetic web site: the objects an origin serves and workloads request.

The same :class:`CatalogConfig` (seed, object count, size distribution) always yields the same objects,
sizes and bytes, on any machine. Objects come in the classes the lecture contrasts (slide 8): small
``html`` pages and larger static ``image``, ``js``, ``css`` and ``video`` objects. Sizes are drawn from a
seeded lognormal or Pareto distribution (heavy tails, as measured for web objects); video sizes are
scaled up. Object ``i`` is popularity rank ``i + 1`` for Zipf workloads (lecture slide 13).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CLASSES = ("html", "image", "js", "css", "video")
CONTENT_TYPES = {
    "html": "text/html; charset=utf-8",
    "image": "image/jpeg",
    "js": "application/javascript",
    "css": "text/css",
    "video": "video/mp4",
}
_PATHS = {
    "html": "/html/page{:04d}.html",
    "image": "/img/img{:04d}.jpg",
    "js": "/static/app{:04d}.js",
    "css": "/static/style{:04d}.css",
    "video": "/video/clip{:04d}.mp4",
}


class CatalogConfig(BaseModel):
    """How the synthetic catalog is drawn."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 1
    objects: int = Field(200, ge=1, le=1_000_000)
    size_distribution: Literal["lognormal", "pareto", "fixed"] = "lognormal"
    #: lognormal: ln(size in bytes) ~ Normal(size_mu, size_sigma); e^9 is about 8 KiB
    size_mu: float = 9.0
    size_sigma: float = Field(1.0, ge=0)
    #: pareto: size = min_bytes * Pareto(pareto_alpha)
    pareto_alpha: float = Field(1.2, gt=0)
    #: fixed: every object has this size (benchmarks use 1024)
    fixed_bytes: int = Field(1024, ge=1)
    min_bytes: int = Field(128, ge=1)
    max_bytes: int = Field(8 * 1024 * 1024, ge=1)
    #: video objects are this many times larger than the drawn size (then clamped to max_bytes)
    video_scale: float = Field(32.0, ge=1)
    #: relative share of each class; missing classes get 0
    class_weights: dict[Literal["html", "image", "js", "css", "video"], float] = Field(
        default_factory=lambda: {"html": 0.15, "image": 0.45, "js": 0.1, "css": 0.1, "video": 0.2}
    )


@dataclass(frozen=True)
class CatalogObject:
    index: int
    path: str
    cls: str
    size: int

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.cls]


class Catalog:
    """The objects of a :class:`CatalogConfig`, by index and by path, and their bytes per version."""

    def __init__(self, cfg: CatalogConfig | None = None) -> None:
        self.cfg = cfg or CatalogConfig()
        rng = random.Random(self.cfg.seed)
        classes = [c for c in CLASSES if self.cfg.class_weights.get(c, 0) > 0] or ["image"]
        weights = [self.cfg.class_weights.get(c, 1.0) for c in classes]
        self.objects: list[CatalogObject] = []
        for i in range(self.cfg.objects):
            cls = rng.choices(classes, weights)[0]
            size = self._draw_size(rng, cls)
            self.objects.append(CatalogObject(i, _PATHS[cls].format(i), cls, size))
        self.by_path = {o.path: o for o in self.objects}
        self._static = [o for o in self.objects if o.cls != "html"]

    def _draw_size(self, rng: random.Random, cls: str) -> int:
        c = self.cfg
        if c.size_distribution == "fixed":
            return c.fixed_bytes
        if c.size_distribution == "pareto":
            s = c.min_bytes * rng.paretovariate(c.pareto_alpha)
        else:
            s = rng.lognormvariate(c.size_mu, c.size_sigma)
        if cls == "video":
            s *= c.video_scale
        return int(min(c.max_bytes, max(c.min_bytes, s)))

    def __len__(self) -> int:
        return len(self.objects)

    def get(self, path: str) -> CatalogObject | None:
        return self.by_path.get(path)

    def body(self, obj: CatalogObject, version: int = 0) -> bytes:
        """The object's bytes at ``version`` (deterministic; a new version has different bytes)."""
        return random.Random(f"{self.cfg.seed}:{obj.path}:{version}").randbytes(obj.size)

    def etag(self, obj: CatalogObject, version: int = 0) -> str:
        h = hashlib.sha1(f"{self.cfg.seed}:{obj.path}:{version}".encode()).hexdigest()[:16]
        return f'"{h}-v{version}"'

    def base_mtime(self, obj: CatalogObject) -> float:
        """Last-Modified of version 0: a fixed date in 2024, one second apart per object."""
        return 1_704_067_200.0 + obj.index

    def html_assets(self, obj: CatalogObject, count: int = 4) -> list[CatalogObject]:
        """The static objects a page embeds (deterministic per page)."""
        rng = random.Random(f"{self.cfg.seed}:assets:{obj.path}")
        return rng.sample(self._static, min(count, len(self._static)))
