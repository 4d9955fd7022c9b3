"""The HTTP endpoints, a Ray Serve deployment with a FastAPI ingress.

Every request carries ``Authorization: Bearer TOKEN``; without a known token it gets 401 and
nothing else. Endpoints (bodies are :mod:`~AttentionSegLib.serve.wire` messages, answers JSON or
messages):

- ``GET /models``: the served models (``NAME.pt`` files of the models folder) and what each takes.
- ``GET /models/NAME``: its metadata (the model file without its weights: labels, channels, ...).
- ``PUT /images/SHA256``: an image (array + geometry), kept per user in the object store.
- ``POST /models/NAME/segment``: the whole image (labels, and an uncertainty map when asked).
- ``POST /models/NAME/window``: an automatic model's labels in one window (a click).
- ``POST /models/NAME/prompt``: an interactive model's object mask from the prompts and the
  object's current mask (stateless: the client keeps the session and its undo).

An image a request names but the store does not hold (forgotten, or the server restarted) is
answered 404 with ``"code": "image-unknown"``; the client uploads it again and repeats.
Each replica keeps its predictors (one per model file and options, reloaded when the file
changes) and the last images it normalised.
"""

import asyncio
import hashlib
import re
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import ray
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from ray import serve

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.serve import wire
from AttentionSegLib.serve.image_store import image_store
from AttentionSegLib.serve.tokens import user_of

__all__ = ["api", "SegmentationServer", "NAMESPACE"]

NAMESPACE = "attentionseg"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_IMAGES_KEPT = 4  # images (and normalised images) per replica: a reader's clicks reuse theirs

api = FastAPI(title="AttentionSeg server", docs_url=None, redoc_url=None, openapi_url=None)


def _message(header: dict, arrays: dict | None = None, compress=()) -> Response:
    return Response(wire.encode(header, arrays, compress), media_type=wire.MESSAGE_TYPE)


def _decoded(body: bytes) -> tuple[dict, dict]:
    """A request body's header and arrays; 400 when it is not a message."""
    try:
        return wire.decode(body)
    except wire.WireError as error:
        raise HTTPException(400, str(error)) from None


class _ImageUnknown(Exception):
    pass


@api.exception_handler(AttentionSegError)
async def _bad_input(request: Request, error: AttentionSegError) -> JSONResponse:
    return JSONResponse({"detail": str(error).splitlines()[0]}, status_code=422)


@api.exception_handler(_ImageUnknown)
async def _image_unknown(request: Request, error: _ImageUnknown) -> JSONResponse:
    return JSONResponse({"detail": f"image {error} is not on the server; upload it", "code": "image-unknown"}, 404)


@serve.deployment(name="AttentionSegServer")
@serve.ingress(api)
class SegmentationServer:
    """One replica. ``tokens``: ``{sha256: user}``; ``max_upload_bytes`` bounds an upload."""

    def __init__(self, models_folder: str, tokens: dict[str, str], max_upload_bytes: int, threads: int = 0) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.models_folder, self.tokens, self.max_upload_bytes = Path(models_folder), dict(tokens), max_upload_bytes
        self.store = image_store(NAMESPACE)
        self._predictors: dict[tuple, object] = {}
        self._summaries: dict[tuple, dict] = {}  # GET /models: (file, mtime) -> what it serves
        self._normalized: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._images: OrderedDict[tuple, dict] = OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------ checks
    def _user(self, request: Request) -> str:
        user = user_of(request.headers.get("authorization"), self.tokens)
        if user is None:
            raise HTTPException(401, "token refused", headers={"WWW-Authenticate": "Bearer"})
        return user

    def _model_path(self, name: str) -> Path:
        path = self.models_folder / f"{name}.pt"
        if not _MODEL_NAME.match(name) or not path.is_file():
            raise HTTPException(404, f"model {name!r} is not served here")
        return path

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and int(declared) > self.max_upload_bytes:
            raise HTTPException(
                413, f"body of {int(declared)} bytes; this server takes at most {self.max_upload_bytes}"
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_upload_bytes:
                raise HTTPException(413, f"body over {self.max_upload_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _request(self, request: Request) -> tuple[str, dict, dict]:
        user = self._user(request)
        return (user, *_decoded(await self._body(request)))

    # ------------------------------------------------------------------------------ state
    def _predictor(self, path: Path, tta: bool = False, overlap: float = 0.5, keep_largest: bool = False):
        from AttentionSegLib.inference.predictor import Predictor

        key = (str(path), path.stat().st_mtime_ns, bool(tta), float(overlap), bool(keep_largest))
        with self._lock:
            if key not in self._predictors:
                self._predictors[key] = Predictor(
                    path, device="auto", tta=tta, overlap=overlap, keep_largest=keep_largest
                )
            return self._predictors[key]

    def _keep(self, cache: OrderedDict, key: tuple, value) -> None:
        """Put ``value`` into one of the replica's caches, forgetting the oldest beyond ``_IMAGES_KEPT``."""
        with self._lock:
            cache[key] = value
            cache.move_to_end(key)
            while len(cache) > _IMAGES_KEPT:
                cache.popitem(last=False)

    def _image(self, user: str, digest: str):
        """The uploaded image as an :class:`~AttentionSegLib.io.image.Image` (channels first)."""
        from AttentionSegLib.io.image import Image

        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise HTTPException(400, "the request names no image (its SHA-256)")
        key = (user, digest)
        with self._lock:
            entry = self._images.get(key)
        if entry is None:
            found = ray.get(self.store.get.remote(user, digest))
            if found is None:
                raise _ImageUnknown(digest[:12])
            entry = ray.get(found[0])
            self._keep(self._images, key, entry)
        return Image(
            entry["array"],
            tuple(entry["spacing"]),
            tuple(entry["origin"]),
            np.asarray(entry["direction"], dtype=float),
            has_channels=True,
        )

    # ------------------------------------------------------------------------------ endpoints
    @api.get("/models")
    def list_models(self, request: Request) -> dict:
        from AttentionSegLib.inference.model_file import load_model_file

        self._user(request)
        models = []
        for path in sorted(self.models_folder.glob("*.pt")):
            if not _MODEL_NAME.match(path.stem):
                continue
            key = (str(path), path.stat().st_mtime_ns)
            if key not in self._summaries:  # read once per file version, not per request
                try:
                    model = load_model_file(path)
                except AttentionSegError:
                    continue  # a damaged file is not served
                self._summaries[key] = {
                    "name": path.stem,
                    "interactive": model.is_interactive,
                    "channels": model.channel_names,
                    "labels": model.label_names if not model.is_interactive else model.object_labels,
                    "dims": model.image_dims,
                }
            models.append(self._summaries[key])
        return {"models": models}

    @api.get("/models/{name}")
    def model_metadata(self, name: str, request: Request) -> dict:
        from AttentionSegLib.inference.model_file import file_digest, load_model_file

        self._user(request)
        path = self._model_path(name)
        return {"metadata": load_model_file(path).metadata(), "sha256": file_digest(path)}

    @api.put("/images/{digest}")
    async def upload_image(self, digest: str, request: Request) -> dict:
        user = self._user(request)
        body = await self._body(request)
        if hashlib.sha256(body).hexdigest() != digest:
            raise HTTPException(400, "the body's SHA-256 is not the one in the address")
        header, arrays = _decoded(body)
        array = arrays.get("image")
        dims = None if array is None else array.ndim - 1
        if array is None or dims not in (2, 3) or any(len(header.get(k) or ()) != dims for k in ("spacing", "origin")):
            raise HTTPException(400, "an image upload holds 'image' (channels, then 2 or 3 axes) and its geometry")
        entry = {
            "array": np.array(array, dtype=np.float32),
            "spacing": [float(v) for v in header["spacing"]],
            "origin": [float(v) for v in header["origin"]],
            "direction": np.asarray(header["direction"], dtype=float).reshape(dims, dims).tolist(),
        }
        await self.store.put.remote(user, digest, entry)
        return {"image": digest}

    @api.post("/models/{name}/segment")
    async def segment(self, name: str, request: Request) -> Response:
        user, header, _ = await self._request(request)
        path = self._model_path(name)

        def work():
            predictor = self._predictor(
                path, header.get("tta", False), header.get("overlap", 0.5), header.get("keep_largest", False)
            )
            image = self._image(user, header.get("image"))
            prediction = predictor.predict(
                [image], clinical=header.get("clinical"), uncertainty=header.get("uncertainty")
            )
            arrays = {"labels": prediction.label_image.array}
            if prediction.uncertainty is not None:
                arrays["uncertainty"] = prediction.uncertainty.array.astype(np.float32)
            return {"seconds": prediction.seconds, "device": prediction.device}, arrays

        answer, arrays = await asyncio.to_thread(work)
        return _message(answer, arrays, compress=("labels",))

    @api.post("/models/{name}/window")
    async def window(self, name: str, request: Request) -> Response:
        user, header, _ = await self._request(request)
        path = self._model_path(name)

        def work():
            predictor = self._predictor(path)
            image = self._image(user, header.get("image"))
            labels, region = predictor.predict_window([image], header["center"], header.get("clinical"))
            return {"region": wire.region_to_json(region)}, {"labels": labels}

        answer, arrays = await asyncio.to_thread(work)
        return _message(answer, arrays, compress=("labels",))

    @api.post("/models/{name}/prompt")
    async def prompt(self, name: str, request: Request) -> Response:
        from AttentionSegLib.interactive.prompts import checked_voxel

        user, header, arrays = await self._request(request)
        path = self._model_path(name)

        def work():
            predictor = self._predictor(path)
            if not predictor.model_file.is_interactive:
                raise AttentionSegError(f"{name}: an automatic model; prompts need an interactive model")
            image = self._image(user, header.get("image"))
            key = (user, header["image"], str(path), path.stat().st_mtime_ns)
            with self._lock:
                normalized = self._normalized.get(key)
            segmenter, normalized = predictor.object_segmenter(image, normalized)
            self._keep(self._normalized, key, normalized)
            shape = normalized.shape[1:]
            prompts = wire.prompts_from_json(header.get("prompts"), wire.unpack_mask(header, arrays, shape))
            for point in prompts.positive + prompts.negative:
                checked_voxel(point, shape)
            region, mask = segmenter.predict(normalized, prompts)
            answer = {"region": wire.region_to_json(region)}
            if header.get("suggest"):
                found = segmenter.least_certain()
                answer["least_certain"] = None if found is None else [list(found[0]), found[1]]
            return answer, {"mask": mask.astype(np.uint8)}

        answer, arrays = await asyncio.to_thread(work)
        return _message(answer, arrays, compress=("mask",))
